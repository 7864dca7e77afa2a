"""Grid carbon intensity and CO₂ (CodeCarbon's offline tables; ALGORITHMS.md §2).

CO₂ is ours: ``energy_kwh × pue × intensity``; the intensity is what CodeCarbon's offline
tracker would use for the country (and region, where it has a regional table).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, TypeVar

import numpy as np

from compressflow.errors import InputError

__all__ = ["carbon_intensity", "co2_grams"]


_Kwh = TypeVar("_Kwh", float, np.ndarray)


def co2_grams(energy_kwh: _Kwh, pue: float, intensity_g_per_kwh: float) -> _Kwh:
    """CO₂-equivalent in grams: ``energy_kwh × pue × intensity_g_per_kwh`` (ALGORITHMS.md §2);
    ``energy_kwh`` may be a number or a numpy array (one value per task).

    Examples
    --------
    >>> co2_grams(2.0, 1.5, 100.0)
    300.0
    """
    return energy_kwh * pue * intensity_g_per_kwh


def carbon_intensity(country: str, region: str | None = None) -> float:
    """Grid carbon intensity in g CO₂eq/kWh from CodeCarbon's offline tables.

    Uses the same computation as CodeCarbon's offline tracker (global energy mix per
    country; state/province tables for USA, CAN, CHN and Nordic bidding zones).

    Parameters
    ----------
    country : str
        ISO 3166-1 alpha-3 code, e.g. ``"USA"``, ``"FRA"``.
    region : str, optional
        US state, Canadian province, Chinese province or Nordic zone (``"SE3"``).

    Raises
    ------
    InputError
        Unknown country, or a region CodeCarbon has no table for.

    Examples
    --------
    >>> carbon_intensity("FRA") < carbon_intensity("USA")
    True
    """
    if not isinstance(country, str):
        raise InputError(f"energy.country={country!r} must be an ISO 3166-1 alpha-3 string such as 'USA'")
    iso = country.strip().upper()
    if region is not None:
        region = " ".join(str(region).split()).lower()
    return _intensity(iso, region, country)


@functools.lru_cache(maxsize=None)
def _intensity(iso: str, region: str | None, raw_country: str) -> float:
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    _quiet_codecarbon()
    source = DataSource()
    mix = source.get_global_energy_mix_data()
    if iso not in mix:
        raise InputError(
            f"energy.country={raw_country!r} is not in CodeCarbon's offline table; use an ISO 3166-1 alpha-3 "
            f"code such as USA, CAN, FRA, DEU, GBR, CHN, IND ({len(mix)} known)"
        )
    if region is not None:
        regions = _known_regions(iso, source)
        if not regions:
            raise InputError(
                f"energy.region={region!r}: CodeCarbon has regional tables only for USA, CAN, CHN, SWE, NOR, FIN; "
                f"drop the region for {iso}"
            )
        if region not in regions:
            some = ", ".join(sorted(regions)[:6])
            raise InputError(f"energy.region={region!r} is unknown for {iso}; use one of {some}, ...")
    kg = Emissions(source).get_private_infra_emissions(
        Energy.from_energy(kWh=1.0), GeoMetadata(country_iso_code=iso, region=region)
    )
    return kg * 1000.0


def _known_regions(iso: str, source: Any) -> set[str]:
    from codecarbon.core.emissions import _NORDIC_REGIONS_BY_COUNTRY

    if iso == "USA":
        return {k for k in source.get_country_emissions_data("usa") if not k.startswith("_")}
    if iso == "CAN":
        return set(source.get_country_energy_mix_data("can"))
    if iso == "CHN":
        return {n for p in source.get_china_provincial_emissions_data()["data"].values() for n in p["names"]}
    return {z.lower() for z in _NORDIC_REGIONS_BY_COUNTRY.get(iso, ())}



def _quiet_codecarbon() -> None:
    # The tracker sets its level only after logging its first INFO/WARNING lines.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
