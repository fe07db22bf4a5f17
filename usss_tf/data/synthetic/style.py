"""The appearance of each synthetic domain, and how scene classes map to its label space."""

import dataclasses

import numpy as np

from usss_tf import domains as domains_lib
from usss_tf.errors import UnknownDomainError

SYNTHETIC_DOMAINS = ("synth_city", "synth_camvid", "synth_idd")

# The scene grammar's classes (same order as `domains.SYNTH_CITY_CLASSES`)
# plus the ego vehicle, which no domain trains on.
ROAD, SIDEWALK, BUILDING, FENCE, POLE, VEGETATION, SKY, PERSON, CAR, TRUCK, EGO = range(11)
SCENE_CLASSES = domains_lib.SYNTH_CITY_CLASSES + ("ego vehicle",)

# Scene class -> class name in each domain's label space (None = void).
_CLASS_NAMES_IN_DOMAIN = {
    "synth_city": dict(zip(SCENE_CLASSES, SCENE_CLASSES)) | {"ego vehicle": None},
    "synth_camvid": {
        "road": "road", "sidewalk": "pavement", "building": "building",
        "fence": None, "pole": None, "vegetation": "tree", "sky": "sky",
        "person": "pedestrian", "car": "vehicle", "truck": "vehicle",
        "ego vehicle": None,
    },
    "synth_idd": {
        "road": "road", "sidewalk": "sidewalk", "building": "building",
        "fence": None, "pole": None, "vegetation": "vegetation", "sky": "sky",
        "person": "person", "car": "car", "truck": "large vehicle",
        "ego vehicle": None,
    },
}  # fmt: skip
# Raw id written for pixels without a class: Cityscapes "ego vehicle", CamVid void.
_VOID_RAW_ID = {
    "synth_city": 1,
    "synth_camvid": domains_lib.SYNTH_CAMVID_VOID,
    "synth_idd": domains_lib.SYNTH_IDD_VOID,
}


def raw_id_table(domain_name) -> np.ndarray:
    """uint8[len(SCENE_CLASSES)]: scene class -> raw id of `domain_name`."""
    domain = domains_lib.get_domain(domain_name)
    train_to_raw = {train: raw for raw, train in domain.raw_to_train}
    names = _CLASS_NAMES_IN_DOMAIN[domain_name]
    table = []
    for scene_class in SCENE_CLASSES:
        name = names[scene_class]
        if name is None:
            table.append(_VOID_RAW_ID[domain_name])
        else:
            table.append(train_to_raw[domain.class_names.index(name)])
    return np.asarray(table, dtype=np.uint8)


# ---------------------------------------------------------------------------
# Appearance of each domain.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Style:
    """Camera, light and materials of one synthetic domain.

    Ranges are ``(low, high)`` for a uniform draw per image. Lengths are in
    metres; colours are linear RGB in 0..1 before grading.
    """

    horizon: tuple  # horizon row / image height
    camera_height: tuple  # sets pixels per metre at the bottom row
    roll_degrees: float  # |roll| limit
    hood: bool  # draw the ego car's hood
    sky_top: tuple  # candidate colours
    sky_horizon: tuple
    facade_colours: tuple
    window_colours: tuple
    road_colour: tuple
    sidewalk_colours: tuple
    vegetation_colours: tuple
    car_colours: tuple
    clothes_colours: tuple
    fence_colours: tuple
    pole_colours: tuple
    colour_gains: tuple  # white balance (r, g, b)
    saturation: float
    contrast: float
    texture_fine: float  # amplitude of pixel-scale texture
    texture_coarse: float  # amplitude of blotchy texture
    texture_scale: float  # sigma (px) of the blotchy texture
    shadow_strength: tuple
    blur_sigma: tuple
    noise_sigma: tuple
    num_cars: tuple  # inclusive ranges of counts
    num_trucks: tuple
    num_people: tuple
    num_poles: tuple
    num_trees: tuple
    fence_probability: float
    park_probability: float  # a side of the street is vegetation, not facades


_GREYS = ((0.55, 0.55, 0.56), (0.3, 0.3, 0.31), (0.12, 0.12, 0.13), (0.8, 0.8, 0.8))

STYLES = {
    "synth_city": Style(
        horizon=(0.36, 0.46),
        camera_height=(1.6, 2.0),
        roll_degrees=0.5,
        hood=True,
        sky_top=((0.55, 0.66, 0.8), (0.7, 0.75, 0.82), (0.45, 0.6, 0.8)),
        sky_horizon=((0.85, 0.88, 0.9), (0.78, 0.82, 0.86)),
        facade_colours=(
            (0.7, 0.7, 0.68), (0.62, 0.6, 0.55), (0.8, 0.78, 0.72),
            (0.45, 0.47, 0.5), (0.55, 0.5, 0.45), (0.72, 0.66, 0.55),
        ),
        window_colours=((0.2, 0.24, 0.3), (0.35, 0.4, 0.48), (0.12, 0.13, 0.15)),
        road_colour=(0.36, 0.37, 0.39),
        sidewalk_colours=((0.58, 0.57, 0.56), (0.5, 0.49, 0.5), (0.62, 0.58, 0.52)),
        vegetation_colours=((0.22, 0.35, 0.14), (0.3, 0.4, 0.2), (0.18, 0.28, 0.16)),
        car_colours=_GREYS + ((0.15, 0.2, 0.45), (0.5, 0.1, 0.1), (0.85, 0.85, 0.88)),
        clothes_colours=_GREYS + ((0.15, 0.2, 0.35), (0.4, 0.32, 0.25), (0.5, 0.15, 0.15)),
        fence_colours=((0.45, 0.42, 0.38), (0.3, 0.32, 0.3), (0.6, 0.6, 0.6)),
        pole_colours=((0.4, 0.4, 0.4), (0.25, 0.27, 0.28), (0.55, 0.55, 0.52)),
        colour_gains=(0.93, 1.0, 1.1),
        saturation=0.75,
        contrast=0.85,
        texture_fine=0.06,
        texture_coarse=0.06,
        texture_scale=3.0,
        shadow_strength=(0.15, 0.35),
        blur_sigma=(0.0, 0.0),
        noise_sigma=(0.006, 0.015),
        num_cars=(1, 6),
        num_trucks=(0, 2),
        num_people=(1, 6),
        num_poles=(1, 5),
        num_trees=(0, 4),
        fence_probability=0.6,
        park_probability=0.25,
    ),
    "synth_camvid": Style(
        horizon=(0.48, 0.58),
        camera_height=(1.0, 1.3),
        roll_degrees=3.0,
        hood=False,
        sky_top=((0.35, 0.4, 0.65), (0.5, 0.45, 0.7), (0.55, 0.55, 0.75)),
        sky_horizon=((1.0, 0.7, 0.4), (0.95, 0.6, 0.5), (1.0, 0.82, 0.55)),
        facade_colours=(
            (0.55, 0.25, 0.18), (0.75, 0.55, 0.3), (0.85, 0.75, 0.55),
            (0.45, 0.3, 0.25), (0.65, 0.4, 0.3), (0.7, 0.65, 0.6),
        ),
        window_colours=((0.15, 0.12, 0.12), (0.9, 0.75, 0.4), (0.3, 0.25, 0.3)),
        road_colour=(0.3, 0.28, 0.27),
        sidewalk_colours=((0.55, 0.42, 0.36), (0.62, 0.55, 0.45), (0.45, 0.4, 0.38)),
        vegetation_colours=((0.3, 0.38, 0.1), (0.4, 0.42, 0.15), (0.2, 0.3, 0.08)),
        car_colours=_GREYS + ((0.7, 0.15, 0.1), (0.15, 0.35, 0.15), (0.8, 0.7, 0.2)),
        clothes_colours=_GREYS + ((0.6, 0.2, 0.1), (0.2, 0.3, 0.5), (0.7, 0.6, 0.3)),
        fence_colours=((0.4, 0.3, 0.2), (0.3, 0.3, 0.3), (0.55, 0.45, 0.35)),
        pole_colours=((0.3, 0.28, 0.25), (0.2, 0.2, 0.2), (0.45, 0.4, 0.35)),
        colour_gains=(1.12, 1.0, 0.8),
        saturation=1.35,
        contrast=1.25,
        texture_fine=0.04,
        texture_coarse=0.12,
        texture_scale=7.0,
        shadow_strength=(0.3, 0.55),
        blur_sigma=(0.7, 1.3),
        noise_sigma=(0.02, 0.04),
        num_cars=(1, 4),
        num_trucks=(0, 2),
        num_people=(2, 8),
        num_poles=(0, 3),
        num_trees=(1, 5),
        fence_probability=0.4,
        park_probability=0.35,
    ),
    "synth_idd": Style(
        horizon=(0.4, 0.52),
        camera_height=(1.3, 1.7),
        roll_degrees=1.5,
        hood=False,
        sky_top=((0.75, 0.76, 0.72), (0.8, 0.78, 0.7), (0.68, 0.72, 0.74)),
        sky_horizon=((0.9, 0.87, 0.78), (0.92, 0.9, 0.84)),
        facade_colours=(
            (0.85, 0.8, 0.62), (0.6, 0.75, 0.7), (0.9, 0.65, 0.55),
            (0.7, 0.6, 0.75), (0.55, 0.5, 0.4), (0.95, 0.92, 0.85),
        ),
        window_colours=((0.25, 0.2, 0.15), (0.1, 0.1, 0.1), (0.45, 0.35, 0.25)),
        road_colour=(0.45, 0.42, 0.38),
        sidewalk_colours=((0.65, 0.55, 0.42), (0.55, 0.5, 0.45), (0.7, 0.62, 0.5)),
        vegetation_colours=((0.35, 0.42, 0.2), (0.42, 0.45, 0.25), (0.28, 0.35, 0.18)),
        car_colours=_GREYS + ((0.9, 0.85, 0.3), (0.2, 0.5, 0.3), (0.95, 0.95, 0.95)),
        clothes_colours=_GREYS + ((0.85, 0.45, 0.1), (0.7, 0.1, 0.4), (0.95, 0.9, 0.8)),
        fence_colours=((0.5, 0.45, 0.35), (0.35, 0.3, 0.28), (0.65, 0.6, 0.5)),
        pole_colours=((0.5, 0.48, 0.45), (0.3, 0.3, 0.28), (0.6, 0.58, 0.5)),
        colour_gains=(1.05, 1.0, 0.88),
        saturation=0.9,
        contrast=0.7,
        texture_fine=0.08,
        texture_coarse=0.1,
        texture_scale=5.0,
        shadow_strength=(0.1, 0.25),
        blur_sigma=(0.3, 0.8),
        noise_sigma=(0.01, 0.03),
        num_cars=(2, 7),
        num_trucks=(0, 3),
        num_people=(3, 10),
        num_poles=(0, 3),
        num_trees=(0, 3),
        fence_probability=0.2,
        park_probability=0.15,
    ),
}  # fmt: skip


def style_of(domain_name) -> Style:
    """The appearance of one synthetic domain; a clear error for another name."""
    if domain_name not in STYLES:
        raise UnknownDomainError(
            f"unknown synthetic domain {domain_name!r}; synthetic domains: "
            f"{', '.join(SYNTHETIC_DOMAINS)}"
        )
    return STYLES[domain_name]

