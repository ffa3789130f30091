"""The device catalog: device key -> vendor, model name, generation.

`generation` counts within a vendor's product line, starting at 1 for the first model of that
line (Apple Watch "Series 0" of 2015 is generation 1). Stratified analysis uses the generation
of the device that recorded most samples of a user-week; a device key missing from the catalog
is a validation warning and the stratum `unknown`, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN_STRATUM = "unknown"


@dataclass(frozen=True)
class Device:
    key: str
    vendor: str
    model: str
    generation: int
    year: int


_DEVICES: tuple[Device, ...] = (
    # Apple Watch: the original (2015) is the 1st generation; the optical sensor and the
    # sampling policy changed over the series.
    Device("apple_watch_1st_gen", "Apple", "Apple Watch (1st generation)", 1, 2015),
    Device("apple_watch_series_1", "Apple", "Apple Watch Series 1", 2, 2016),
    Device("apple_watch_series_2", "Apple", "Apple Watch Series 2", 2, 2016),
    Device("apple_watch_series_3", "Apple", "Apple Watch Series 3", 3, 2017),
    Device("apple_watch_series_4", "Apple", "Apple Watch Series 4", 4, 2018),
    Device("apple_watch_series_5", "Apple", "Apple Watch Series 5", 5, 2019),
    Device("apple_watch_series_6", "Apple", "Apple Watch Series 6", 6, 2020),
    Device("apple_watch_series_7", "Apple", "Apple Watch Series 7", 7, 2021),
    Device("apple_watch_series_8", "Apple", "Apple Watch Series 8", 8, 2022),
    Device("apple_watch_series_9", "Apple", "Apple Watch Series 9", 9, 2023),
    Device("apple_watch_series_10", "Apple", "Apple Watch Series 10", 10, 2024),
    Device("apple_watch_ultra_2", "Apple", "Apple Watch Ultra 2", 9, 2023),
    # Fitbit trackers with a heart-rate sensor.
    Device("fitbit_charge_hr", "Fitbit", "Fitbit Charge HR", 1, 2015),
    Device("fitbit_charge_2", "Fitbit", "Fitbit Charge 2", 2, 2016),
    Device("fitbit_charge_3", "Fitbit", "Fitbit Charge 3", 3, 2018),
    Device("fitbit_charge_4", "Fitbit", "Fitbit Charge 4", 4, 2020),
    Device("fitbit_charge_5", "Fitbit", "Fitbit Charge 5", 5, 2021),
    Device("fitbit_charge_6", "Fitbit", "Fitbit Charge 6", 6, 2023),
    Device("fitbit_versa", "Fitbit", "Fitbit Versa", 1, 2018),
    Device("fitbit_versa_2", "Fitbit", "Fitbit Versa 2", 2, 2019),
    Device("fitbit_sense_2", "Fitbit", "Fitbit Sense 2", 2, 2022),
    # Garmin.
    Device("garmin_forerunner_235", "Garmin", "Garmin Forerunner 235", 1, 2015),
    Device("garmin_forerunner_245", "Garmin", "Garmin Forerunner 245", 2, 2019),
    Device("garmin_forerunner_265", "Garmin", "Garmin Forerunner 265", 3, 2023),
    Device("garmin_vivoactive_3", "Garmin", "Garmin vivoactive 3", 3, 2017),
    Device("garmin_vivoactive_5", "Garmin", "Garmin vivoactive 5", 5, 2023),
    Device("garmin_fenix_7", "Garmin", "Garmin fenix 7", 7, 2022),
    # Wear OS.
    Device("wearos_moto_360", "Motorola", "Moto 360 (Wear OS)", 1, 2014),
    Device("wearos_galaxy_watch_4", "Samsung", "Galaxy Watch4 (Wear OS)", 4, 2021),
    Device("wearos_galaxy_watch_6", "Samsung", "Galaxy Watch6 (Wear OS)", 6, 2023),
    Device("wearos_pixel_watch", "Google", "Pixel Watch (Wear OS)", 1, 2022),
    Device("wearos_pixel_watch_3", "Google", "Pixel Watch 3 (Wear OS)", 3, 2024),
)

DEVICE_CATALOG: dict[str, Device] = {d.key: d for d in _DEVICES}


def device_generation(key: str) -> int | None:
    """Generation of a catalogued device, None for an unknown key."""
    device = DEVICE_CATALOG.get(key)
    return None if device is None else device.generation


def is_known_device(key: str) -> bool:
    return key in DEVICE_CATALOG
