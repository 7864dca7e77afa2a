"""The README's code blocks, as written."""

import re

from tests.support import ROOT


def readme_blocks(lang: str) -> list[str]:
    """Every ```<lang> block of the README, in order."""
    return re.findall(rf"```{lang}\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def readme_plugin_example() -> tuple[str, str, str]:
    """The "Writing your own op" section's file, spec and command, as written."""
    section = (ROOT / "README.md").read_text().split("## Writing your own op", 1)[1].split("\n## ", 1)[0]
    [ops] = re.findall(r"```python my_ops\.py\n(.+?)\n```", section, flags=re.S)
    [spec] = re.findall(r"```yaml my_study\.yaml\n(.+?)\n```", section, flags=re.S)
    [command] = re.findall(r"```bash\n(compressflow run .+?)\n```", section)
    return ops, spec, command
