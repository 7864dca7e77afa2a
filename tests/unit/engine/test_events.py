"""The events of studies sharing one client: each study hears its own tasks' events only, and
one study that stops following does not deafen the others."""

from __future__ import annotations

from compressflow.engine.events import PROGRESS, TASK, RunningTasks, follow


class OneHandlerPerTopic:
    """What a ``distributed.Client`` does with topic handlers: one per topic (subscribing again
    replaces it), and unsubscribing stops the scheduler sending that topic at all."""

    def __init__(self) -> None:
        self.handlers: dict = {}
        self.subscribed: set[str] = set()

    def subscribe_topic(self, topic, handler) -> None:
        self.handlers[topic] = handler
        self.subscribed.add(topic)

    def unsubscribe_topic(self, topic) -> None:
        self.subscribed.discard(topic)

    def log(self, topic: str, msg: dict) -> None:
        if topic in self.subscribed:
            self.handlers[topic]((0.0, msg))


def test_studies_on_one_client_each_hear_their_own_events():
    client = OneHandlerPerTopic()
    heard: dict[str, list] = {"a": [], "b": []}
    running = {sid: RunningTasks(sid) for sid in heard}

    def handlers(sid: str) -> dict:
        def on_task(event):
            heard[sid].append(event[1]["event"])
            running[sid].on_task(event[1], finished=())

        return {TASK: on_task, PROGRESS: lambda event: running[sid].on_progress(event[1])}

    stop_a, stop_b = follow(client, "a", handlers("a")), follow(client, "b", handlers("b"))
    for sid in ("a", "b"):  # the same task (one task key) in both studies
        client.log(TASK, {"study": sid, "key": "k", "stage": "s", "event": "start", "worker": sid})
    client.log(PROGRESS, {"study": "b", "key": "k", "stage": "s", "epoch": 3})
    client.log(TASK, {"study": "elsewhere", "key": "k", "stage": "s", "event": "end"})
    assert heard == {"a": ["start"], "b": ["start"]}
    assert running["a"].snapshot()["k"]["worker"] == "a" and "epoch" not in running["a"].snapshot()["k"]
    assert running["b"].snapshot()["k"]["epoch"] == 3
    stop_a()
    client.log(TASK, {"study": "b", "key": "k", "stage": "s", "event": "end"})
    client.log(TASK, {"study": "a", "key": "k", "stage": "s", "event": "end"})
    assert heard == {"a": ["start"], "b": ["start", "end"]} and client.subscribed == {TASK, PROGRESS}
    stop_b()
    assert client.subscribed == set()  # the last one unsubscribes the client
    stop_c = follow(client, "c", {TASK: heard["a"].append})  # and a later study subscribes again
    client.log(TASK, {"study": "c", "key": "k", "event": "start"})
    assert heard["a"][-1] == (0.0, {"study": "c", "key": "k", "event": "start"}) and client.subscribed == {TASK}
    stop_c()
