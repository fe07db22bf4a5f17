"""Drawing one street scene with numpy: canvas, surfaces, objects, light, camera."""

import math

import numpy as np
from scipy import ndimage

from usss_tf.errors import ConfigError
from usss_tf.data.synthetic.style import (
    ROAD,
    SIDEWALK,
    BUILDING,
    FENCE,
    POLE,
    VEGETATION,
    SKY,
    PERSON,
    CAR,
    TRUCK,
    EGO,
    style_of,
    raw_id_table,
)

# ---------------------------------------------------------------------------
# Drawing.
# ---------------------------------------------------------------------------


def _jitter(rng, colour, amount=0.08, brightness=0.2):
    """A per-instance variant of `colour`: brightness and per-channel jitter."""
    u = rng.random(4, dtype=np.float32)
    colour = np.asarray(colour, dtype=np.float32) * (1 - brightness + 2 * brightness * u[0])
    colour += (2 * u[1:] - 1) * amount
    return np.minimum(np.maximum(colour, 0.0), 1.0)


def _jitter_many(rng, options, count, amount=0.08, brightness=0.2):
    """`count` jittered colours, each from a random choice of `options`."""
    colours = np.asarray(options, dtype=np.float32)[rng.integers(len(options), size=count)]
    u = rng.random((count, 4), dtype=np.float32)
    colours = colours * (1 - brightness + 2 * brightness * u[:, :1]) + (2 * u[:, 1:] - 1) * amount
    return np.minimum(np.maximum(colours, 0.0), 1.0)


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _smooth_noise(rng, shape, cell):
    """Blotchy noise with features about `cell` px wide, unit variance.

    Random values on a coarse grid, upsampled by repetition and smoothed
    twice with a box filter (a quadratic B-spline): much cheaper than
    low-pass filtering full-resolution noise.
    """
    cell = max(int(round(cell)), 1)
    height, width = shape
    knots = rng.standard_normal((height // cell + 4, width // cell + 4), dtype=np.float32)
    blocks = np.repeat(np.repeat(knots, cell, axis=0), cell, axis=1)
    smooth = ndimage.uniform_filter(ndimage.uniform_filter(blocks, cell), cell)
    noise = smooth[cell : cell + height, cell : cell + width]
    return noise / (noise.std() + 1e-6)


def _uniform_noise(rng, shape):
    """Zero-mean, unit-variance noise; uniform draws are cheaper than normal."""
    return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(math.sqrt(12.0))


class _Canvas:
    """An RGB image and its scene-class map, painted back to front.

    Lengths on the ground plane follow a pinhole camera: a ground point at
    relative depth ``s`` (1 at the bottom row, 0 at the horizon) lands on row
    ``horizon + s * ground_px``, and one metre there spans
    ``s * pixels_per_metre`` pixels.
    """

    def __init__(
        self, height, width, rng, style, *, horizon, vanish_x, pixels_per_metre, ground_px
    ):
        self.height, self.width = height, width
        self.rng = rng
        self.style = style
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.rows = np.arange(height, dtype=np.float32)[:, None]
        self.cols = np.arange(width, dtype=np.float32)[None, :]
        self.horizon = horizon
        self.ppm = pixels_per_metre
        self.ground_px = ground_px
        self.vanish_x = vanish_x
        # Two texture fields shared by all surfaces of this image.
        self.fine = _uniform_noise(rng, (height, width))
        self.coarse = _smooth_noise(rng, (height, width), style.texture_scale)
        self.shading = 1.0 + style.texture_fine * self.fine + style.texture_coarse * self.coarse

    # Geometry ----------------------------------------------------------------

    def screen_x(self, s, lateral_m):
        return self.vanish_x + s * self.ppm * lateral_m

    def ground_row(self, s):
        return self.horizon + s * self.ground_px

    def ground_coordinates(self, row_slice):
        """Lateral position (m, [h, W]) and relative depth ([h, 1]) of ground rows."""
        s = np.maximum((self.rows[row_slice] - self.horizon) / np.float32(self.ground_px), 1e-3)
        lateral = (self.cols - np.float32(self.vanish_x)) / (s * np.float32(self.ppm))
        return lateral, 1.0 / s

    def textured(self, colour, region, *, fine=1.0, coarse=1.0):
        """`colour` modulated by the shared texture fields inside `region`."""
        if fine == 1.0 and coarse == 1.0:
            shade = self.shading[region]
        else:
            style = self.style
            shade = 1.0 + fine * style.texture_fine * self.fine[region]
            shade += coarse * style.texture_coarse * self.coarse[region]
        return np.asarray(colour, np.float32) * shade[..., None]

    # Painting ----------------------------------------------------------------

    def box(self, top, bottom, left, right):
        """Clipped integer region covering [top, bottom) x [left, right)."""
        top, left = max(int(math.floor(top)), 0), max(int(math.floor(left)), 0)
        bottom = min(int(math.ceil(bottom)), self.height)
        right = min(int(math.ceil(right)), self.width)
        if top >= bottom or left >= right:
            return None
        return np.s_[top:bottom, left:right]

    def paint(self, region, mask, colour, scene_class):
        """Sets pixels of `region` where `mask` holds; `colour` broadcasts."""
        if region is None:
            return
        colour = np.asarray(colour, np.float32)
        if mask is None:
            self.rgb[region] = colour
            self.label[region] = scene_class
            return
        np.copyto(self.rgb[region], colour, where=mask[..., None])
        np.copyto(self.label[region], np.uint8(scene_class), where=mask)

    def shade(self, region, mask, factor):
        """Darkens pixels without changing their class (shadows)."""
        if region is None:
            return
        rgb = self.rgb[region]
        rgb[mask] *= np.float32(factor)

    def rect(self, top, bottom, left, right, colour, scene_class, *, texture=True):
        region = self.box(top, bottom, left, right)
        if region is not None:
            fill = self.textured(colour, region) if texture else colour
            self.paint(region, None, fill, scene_class)
        return region

    def ellipse(self, cy, cx, ry, rx, colour, scene_class, *, texture=True):
        region = self.box(cy - ry, cy + ry + 1, cx - rx, cx + rx + 1)
        if region is None:
            return
        yy = self.rows[region[0]] - cy
        xx = self.cols[:, region[1]] - cx
        mask = (yy / max(ry, 0.5)) ** 2 + (xx / max(rx, 0.5)) ** 2 <= 1.0
        fill = self.textured(colour, region) if texture else colour
        self.paint(region, mask, fill, scene_class)


def _draw_sky(canvas):
    style, rng = canvas.style, canvas.rng
    top = _jitter(rng, _pick(rng, style.sky_top), 0.04, 0.08)
    bottom = _jitter(rng, _pick(rng, style.sky_horizon), 0.04, 0.08)
    t = np.clip(canvas.rows / max(canvas.horizon, 1.0), 0, 1)[..., None]  # [H, 1, 1]
    sky = top * (1 - t) + bottom * t
    # Soft clouds: brighter, greyer blotches.
    clouds = np.maximum(canvas.coarse * np.float32(rng.uniform(0.0, 0.25)), 0)[..., None]
    np.multiply(clouds, 1.0 - sky, out=canvas.rgb)
    canvas.rgb += sky
    canvas.label[:] = SKY


def _facade_texture(canvas, region, base, windows, z, height_m, floor_m, window_rate):
    """Plaster with a grid of windows: rows by height, columns by depth."""
    floor_pos = np.mod(height_m / floor_m, 1.0)
    col_pos = np.mod(z * window_rate, 1.0)
    is_window = (floor_pos > 0.35) & (floor_pos < 0.8) & (col_pos > 0.2) & (col_pos < 0.65)
    is_window &= height_m > 0.8 * floor_m
    colour = np.where(is_window[..., None], windows, base)
    # A dark floor band under each row of windows.
    shade = np.where(floor_pos < 0.06, np.float32(0.8), np.float32(1.0)) * canvas.shading[region]
    return colour * shade[..., None]


def _draw_side(canvas, side, street, z_far):
    """Facades or a park hedge along one side of the street, at its edge."""
    style, rng = canvas.style, canvas.rng
    lateral = street["left_edge"] if side < 0 else street["right_edge"]
    # Column -> depth of the vertical plane at `lateral` metres.
    s_col = (canvas.cols[0] - canvas.vanish_x) / np.float32(canvas.ppm * lateral)
    columns = np.nonzero(s_col > 1.0 / z_far)[0]
    if columns.size == 0:
        return
    sub = slice(columns.min(), columns.max() + 1)
    s_col = s_col[sub]  # all valid: the plane's columns are contiguous
    z_col = 1.0 / s_col
    park = rng.random() < style.park_probability
    # Split the side into segments along the street: one building each.
    bounds = [0.0]
    while bounds[-1] < z_far:
        bounds.append(bounds[-1] + rng.uniform(0.6, 3.0))
    num_segments = len(bounds) - 1
    segment = np.clip(np.searchsorted(bounds, z_col) - 1, 0, num_segments - 1)
    heights = rng.uniform(*((2.0, 6.0) if park else (7.0, 24.0)), num_segments)
    top_m = heights.astype(np.float32)[segment]
    if park:  # a ragged top, like a row of trees
        top_m = top_m * (1.0 + 0.15 * np.sin(z_col * np.float32(rng.uniform(8, 20))))
    base_row = canvas.ground_row(s_col)
    top_row = base_row - s_col * np.float32(canvas.ppm) * top_m
    region = canvas.box(top_row.min(), base_row.max() + 1, sub.start, sub.stop)
    if region is None:
        return
    rows = canvas.rows[region[0]]
    mask = (rows >= top_row) & (rows < base_row)
    if park:
        colours = _jitter_many(rng, style.vegetation_colours, num_segments)
        fill = canvas.textured(colours[segment][None], region, fine=3.0, coarse=2.0)
        canvas.paint(region, mask, fill, VEGETATION)
        return
    colours = _jitter_many(rng, style.facade_colours, num_segments)
    windows = _jitter_many(rng, style.window_colours, num_segments, 0.05)
    floor_m = rng.uniform(2.8, 3.6, num_segments).astype(np.float32)
    rate = rng.uniform(1.0, 2.5, num_segments).astype(np.float32)
    height_m = (base_row - rows) / (s_col * np.float32(canvas.ppm))
    fill = _facade_texture(
        canvas, region, colours[segment][None], windows[segment][None], z_col[None],
        height_m, floor_m[segment][None], rate[segment][None],
    )  # fmt: skip
    canvas.paint(region, mask, fill, BUILDING)


def _draw_street_end(canvas, street, z_far):
    """Buildings or trees across the far end of the street, and a skyline."""
    style, rng = canvas.style, canvas.rng
    s = 1.0 / z_far
    base = canvas.ground_row(s)
    # Distant skyline blocks above the horizon.
    x = canvas.screen_x(s, street["left_edge"] - 30.0)
    while x < canvas.screen_x(s, street["right_edge"] + 30.0):
        w = s * canvas.ppm * rng.uniform(6, 20)
        h = s * canvas.ppm * rng.uniform(8, 35)
        if rng.random() < 0.3:
            crown = _jitter(rng, _pick(rng, style.vegetation_colours))
            canvas.ellipse(base - h * 0.3, x + w / 2, h * 0.35, w * 0.6, crown, VEGETATION)
        else:
            facade = _jitter(rng, _pick(rng, style.facade_colours)) * 0.85
            canvas.rect(base - h, base + 1, x, x + w, facade, BUILDING)
        x += w
    # The cross street's facade closes the view.
    left = canvas.screen_x(s, street["left_edge"] - 5.0)
    right = canvas.screen_x(s, street["right_edge"] + 5.0)
    height = s * canvas.ppm * rng.uniform(6, 18)
    facade = _jitter(rng, _pick(rng, style.facade_colours))
    region = canvas.rect(base - height, base + 1, left, right, facade, BUILDING)
    if region is not None and rng.random() < 0.8:
        # Windows on the far facade.
        xs = canvas.cols[:, region[1]]
        ys = canvas.rows[region[0]]
        px = max(s * canvas.ppm * 1.6, 2.0)
        win = (np.mod(xs / px, 1.0) < 0.5) & (np.mod((base - ys) / (px * 1.8), 1.0) > 0.45)
        win = win & (ys < base - px)
        canvas.shade(region, win & (canvas.label[region] == BUILDING), 0.55)


def _draw_ground(canvas, street, z_far):
    """Road (with lane marks), curbs and paved sidewalks, rows below the horizon."""
    style, rng = canvas.style, canvas.rng
    top = int(math.ceil(canvas.ground_row(1.0 / z_far)))
    region = canvas.box(top, canvas.height, 0, canvas.width)
    if region is None:
        return
    lateral, depth = canvas.ground_coordinates(region[0])
    centre, half = street["centre"], street["road_half_width"]
    from_centre = np.abs(lateral - np.float32(centre))
    on_road = from_centre < half
    on_sidewalk = ~on_road & (lateral >= street["left_edge"]) & (lateral <= street["right_edge"])
    shading = canvas.shading[region]

    # Road with lane marks: a dashed centre line and solid edge lines.
    road = _jitter(rng, style.road_colour, 0.03, 0.15)
    dash = np.mod(depth * np.float32(rng.uniform(1.0, 2.0)), 1.0) < 0.5
    marks = (np.abs(lateral - np.float32(centre + street["lane_offset"])) < 0.08) & dash
    if rng.random() < 0.7:
        marks |= np.abs(from_centre - np.float32(half - 0.3)) < 0.07
    fill = np.where(marks[..., None], np.float32(0.85), road * shading[..., None])
    canvas.paint(region, on_road, fill, ROAD)

    # Sidewalks: paving tiles with grout lines, a lighter curb at the road.
    left = _jitter(rng, _pick(rng, style.sidewalk_colours), 0.04, 0.12)
    right = _jitter(rng, _pick(rng, style.sidewalk_colours), 0.04, 0.12)
    tile_m = np.float32(rng.uniform(0.4, 1.2))
    grout = (np.mod(lateral / tile_m, 1.0) < 0.08) | (np.mod(depth * (6.0 / tile_m), 1.0) < 0.08)
    shade = shading * np.where(grout, np.float32(0.8), np.float32(1.0))
    shade = np.where(from_centre < half + 0.2, shade * np.float32(1.2), shade)
    paving = np.where((lateral < centre)[..., None], left, right)
    canvas.paint(region, on_sidewalk, paving * shade[..., None], SIDEWALK)


def _draw_fence(canvas, street, side, z_near, z_far):
    """A fence just inside one sidewalk's outer edge, from z_near to z_far."""
    style, rng = canvas.style, canvas.rng
    lateral = (street["left_edge"] + 0.3) if side < 0 else (street["right_edge"] - 0.3)
    cols = canvas.cols[0]
    s_col = (cols - canvas.vanish_x) / (canvas.ppm * lateral)
    valid = (s_col > 1.0 / z_far) & (s_col < 1.0 / z_near)
    if not valid.any():
        return
    s_col = np.where(valid, s_col, 1.0)
    height_m = rng.uniform(0.9, 1.8)
    base_row = canvas.ground_row(s_col)
    top_row = base_row - s_col * canvas.ppm * height_m
    columns = np.nonzero(valid)[0]
    sub = slice(columns.min(), columns.max() + 1)
    region = canvas.box(top_row[sub].min(), base_row[sub].max() + 1, sub.start, sub.stop)
    if region is None:
        return
    rows = canvas.rows[region[0]]
    mask = (rows >= top_row[sub]) & (rows < base_row[sub]) & valid[sub]
    colour = _jitter(rng, _pick(rng, style.fence_colours))
    fill = canvas.textured(colour, region, fine=1.0, coarse=0.5)
    # Slats along the street and two rails.
    slats = np.mod(1.0 / s_col[sub] * rng.uniform(8, 20), 1.0) < 0.45
    rail_pos = (base_row[sub] - rows) / (base_row[sub] - top_row[sub] + 1e-3)
    rails = (np.abs(rail_pos - 0.2) < 0.06) | (np.abs(rail_pos - 0.85) < 0.06)
    fill = np.where((slats[None] | rails)[..., None], fill, fill * 0.6)
    canvas.paint(region, mask, fill, FENCE)


def _draw_pole(canvas, s, x, colour, arm_dir):
    height = s * canvas.ppm * canvas.rng.uniform(4.5, 8.0)
    width = max(s * canvas.ppm * canvas.rng.uniform(0.12, 0.25), 1.0)
    base = canvas.ground_row(s)
    canvas.rect(base - height, base + 1, x - width / 2, x + width / 2, colour, POLE)
    if canvas.rng.random() < 0.6:  # street lamp arm
        arm = s * canvas.ppm * canvas.rng.uniform(0.8, 2.0) * arm_dir
        thick = max(width * 0.7, 1.0)
        left, right = sorted((x, x + arm))
        canvas.rect(base - height, base - height + thick, left, right, colour, POLE)


def _draw_tree(canvas, s, x, colour):
    rng = canvas.rng
    ppm = s * canvas.ppm
    base = canvas.ground_row(s)
    trunk_h = ppm * rng.uniform(1.5, 3.0)
    trunk_w = max(ppm * rng.uniform(0.2, 0.4), 1.0)
    canvas.rect(
        base - trunk_h,
        base + 1,
        x - trunk_w / 2,
        x + trunk_w / 2,
        _jitter(rng, (0.3, 0.22, 0.15)),
        VEGETATION,
    )
    radius = ppm * rng.uniform(1.2, 2.8)
    for _ in range(rng.integers(3, 7)):
        cy = base - trunk_h - radius * rng.uniform(0.0, 1.0)
        cx = x + radius * rng.uniform(-0.8, 0.8)
        r = radius * rng.uniform(0.5, 0.9)
        canvas.ellipse(cy, cx, r, r * rng.uniform(0.9, 1.3), _jitter(rng, colour, 0.05), VEGETATION)


def _draw_person(canvas, s, x):
    rng, style = canvas.rng, canvas.style
    ppm = s * canvas.ppm
    base = canvas.ground_row(s)
    height = ppm * rng.uniform(1.5, 1.9)
    width = height * rng.uniform(0.22, 0.3)
    shirt = _jitter(rng, _pick(rng, style.clothes_colours))
    trousers = _jitter(rng, _pick(rng, style.clothes_colours))
    skin = _jitter(
        rng, _pick(rng, ((0.85, 0.65, 0.5), (0.55, 0.38, 0.28), (0.95, 0.78, 0.65))), 0.04
    )
    leg_top = base - height * 0.48
    stride = width * rng.uniform(0.0, 0.35)
    for offset in (-1, 1):
        cx = x + offset * (width * 0.22 + stride * 0.5)
        canvas.rect(leg_top, base + 1, cx - width * 0.17, cx + width * 0.17, trousers, PERSON)
    canvas.ellipse(base - height * 0.66, x, height * 0.2, width / 2, shirt, PERSON)
    canvas.ellipse(base - height * 0.9, x, height * 0.08, width * 0.28, skin, PERSON)
    if rng.random() < 0.3:  # a bag or backpack
        canvas.rect(
            base - height * 0.7,
            base - height * 0.5,
            x + width * 0.3,
            x + width * 0.7,
            _jitter(rng, _pick(rng, style.clothes_colours)),
            PERSON,
        )


def _draw_vehicle(canvas, s, x, truck):
    rng, style = canvas.rng, canvas.style
    ppm = s * canvas.ppm
    base = canvas.ground_row(s)
    if truck:
        width, height = ppm * rng.uniform(2.3, 2.6), ppm * rng.uniform(3.0, 3.9)
        body = _jitter(rng, _pick(rng, style.car_colours + ((0.85, 0.85, 0.85), (0.6, 0.2, 0.1))))
    else:
        width, height = ppm * rng.uniform(1.65, 1.95), ppm * rng.uniform(1.35, 1.6)
        body = _jitter(rng, _pick(rng, style.car_colours))
    left, right = x - width / 2, x + width / 2
    # Shadow on the road underneath.
    region = canvas.box(base - ppm * 0.15, base + ppm * 0.25, left - ppm * 0.2, right + ppm * 0.2)
    if region is not None:
        canvas.shade(region, canvas.label[region] == ROAD, 0.45)
    wheel = ppm * 0.35
    scene_class = TRUCK if truck else CAR
    tyre = (0.05, 0.05, 0.05)
    canvas.rect(base - wheel, base + 1, left + width * 0.03, left + width * 0.2, tyre, scene_class)
    canvas.rect(
        base - wheel, base + 1, right - width * 0.2, right - width * 0.03, tyre, scene_class
    )
    if truck:
        canvas.rect(base - height, base - wheel * 0.7, left, right, body, TRUCK)
        canvas.rect(base - wheel * 1.1, base - wheel * 0.7, left, right, (0.1, 0.1, 0.1), TRUCK)
        if rng.random() < 0.5:  # seen from behind: cargo doors
            seam = max(ppm * 0.03, 0.5)
            canvas.rect(base - height, base - wheel, x - seam, x + seam, body * 0.6, TRUCK)
        else:  # seen from the front: windscreen and grille
            glass = _jitter(rng, (0.15, 0.18, 0.22), 0.04)
            canvas.rect(
                base - height * 0.62,
                base - height * 0.42,
                left + width * 0.08,
                right - width * 0.08,
                glass,
                TRUCK,
            )
            canvas.rect(
                base - height * 0.3,
                base - height * 0.18,
                x - width * 0.3,
                x + width * 0.3,
                body * 0.5,
                TRUCK,
            )
        return
    body_top = base - height * 0.55
    canvas.rect(body_top, base - wheel * 0.6, left, right, body, CAR)
    # Cabin: narrower, with a dark rear window.
    cabin_top = base - height
    inset = width * rng.uniform(0.1, 0.18)
    canvas.rect(cabin_top, body_top + 1, left + inset, right - inset, body, CAR)
    glass = _jitter(rng, (0.12, 0.15, 0.2), 0.04)
    canvas.rect(
        cabin_top + height * 0.06, body_top, left + inset * 1.4, right - inset * 1.4, glass, CAR
    )
    # Tail lights and plate.
    light = (0.75, 0.1, 0.08)
    for lx in (left + width * 0.04, right - width * 0.16):
        canvas.rect(
            body_top + height * 0.08,
            body_top + height * 0.18,
            lx,
            lx + width * 0.12,
            light,
            CAR,
            texture=False,
        )
    canvas.rect(
        base - height * 0.3,
        base - height * 0.2,
        x - width * 0.12,
        x + width * 0.12,
        (0.85, 0.85, 0.8),
        CAR,
        texture=False,
    )


def _draw_hood(canvas, bottom):
    """The ego car's hood at the bottom of the frame (ignored in training)."""
    rng = canvas.rng
    cx = canvas.width * rng.uniform(0.45, 0.55)
    rx = canvas.width * rng.uniform(0.6, 0.8)
    ry = canvas.height * rng.uniform(0.06, 0.1)
    region = canvas.box(bottom - ry, bottom, 0, canvas.width)
    if region is None:
        return
    yy = canvas.rows[region[0]] - bottom
    xx = canvas.cols[:, region[1]] - cx
    mask = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
    colour = _jitter(rng, _pick(rng, ((0.15, 0.15, 0.17), (0.6, 0.6, 0.62))))
    glint = np.exp(-((xx / (rx * 0.3)) ** 2)) * 0.2
    canvas.paint(region, mask, canvas.textured(colour, region) + glint[..., None], EGO)


def _place_objects(canvas, street, z_far):
    """Draws poles, trees, people and vehicles, far to near (painter's order)."""
    style, rng = canvas.style, canvas.rng
    centre, half = street["centre"], street["road_half_width"]
    z_max = min(z_far * 0.9, 14.0)
    objects = []  # (depth s, draw function, its arguments after canvas)

    def depth():
        # Uniform in distance: far objects (small) are more common, as on a street.
        return 1.0 / rng.uniform(0.9, z_max)

    def on_sidewalk(margin_from_curb, margin_from_wall):
        side = -1 if rng.random() < 0.5 else 1
        edge = street["left_edge"] if side < 0 else street["right_edge"]
        curb = centre + side * half
        low, high = sorted((curb + side * margin_from_curb, edge - side * margin_from_wall))
        return side, rng.uniform(low, high)

    def count(limits):
        return rng.integers(limits[0], limits[1] + 1)

    pole_colour = _jitter(rng, _pick(rng, style.pole_colours))
    for _ in range(count(style.num_poles)):
        s, (side, lateral) = depth(), on_sidewalk(0.3, 0.6)
        objects.append((s, _draw_pole, (s, canvas.screen_x(s, lateral), pole_colour, -side)))
    tree_colour = _pick(rng, style.vegetation_colours)
    for _ in range(count(style.num_trees)):
        s, (_, lateral) = depth(), on_sidewalk(0.8, 0.8)
        objects.append((s, _draw_tree, (s, canvas.screen_x(s, lateral), tree_colour)))
    for _ in range(count(style.num_people)):
        s = depth()
        if rng.random() < 0.15:  # crossing the road
            lateral = centre + rng.uniform(-half, half)
        else:
            _, lateral = on_sidewalk(0.3, 0.3)
        objects.append((s, _draw_person, (s, canvas.screen_x(s, lateral))))
    num_cars, num_trucks = count(style.num_cars), count(style.num_trucks)
    for truck in [False] * num_cars + [True] * num_trucks:
        s = depth()
        # Driving in a lane or parked at the curb.
        lateral = centre + rng.uniform(-0.75, 0.75) * half
        objects.append((s, _draw_vehicle, (s, canvas.screen_x(s, lateral), truck)))
    for _, draw, args in sorted(objects, key=lambda item: item[0]):
        draw(canvas, *args)


def _light(canvas, street):
    """Shadows (one street side, dapples) and a smooth light gradient.

    Shadows darken whatever they fall on and change no class, so brightness
    alone never tells classes apart.
    """
    style, rng = canvas.style, canvas.rng
    strength = np.float32(rng.uniform(*style.shadow_strength))
    side = -1 if rng.random() < 0.5 else 1
    half = street["road_half_width"]
    edge = street["centre"] + side * rng.uniform(-half, half)
    gx = (canvas.cols / np.float32(canvas.width) - 0.5) * np.float32(rng.uniform(-0.4, 0.4))
    gy = (canvas.rows / np.float32(canvas.height) - 0.5) * np.float32(rng.uniform(-0.3, 0.1))
    factor = 1.0 + gx + gy  # [H, W]
    # The facades on the shadow side face away from the sun.
    facade = canvas.label == BUILDING
    factor[facade & ((canvas.cols < canvas.vanish_x) == (side < 0))] *= 1 - strength * 0.6
    # Below the horizon: a shadow line parallel to the street, broken by
    # tree-like dapples.
    below = slice(int(math.floor(canvas.horizon)) + 1, canvas.height)
    lateral, _ = canvas.ground_coordinates(below)
    shadow = (lateral - np.float32(edge)) * side > 0
    shadow ^= canvas.coarse[below] > rng.uniform(1.0, 2.0)
    factor[below][shadow] *= 1 - strength
    canvas.rgb *= factor[..., None]


def _grade(rgb, style, rng):
    """Domain colour grading: exposure, white balance, contrast, saturation."""
    exposure = rng.uniform(0.8, 1.2)
    gains = np.asarray(style.colour_gains, np.float32) * np.float32(exposure * style.contrast)
    offset = np.float32(0.5 * (1.0 - style.contrast))
    saturation = np.float32(style.saturation)
    rgb = rgb * gains + offset
    grey = (rgb[..., 0] + rgb[..., 1] + rgb[..., 2]) * np.float32((1.0 - saturation) / 3.0)
    rgb *= saturation
    rgb += grey[..., None]
    return rgb


def _camera_effects(rgb, style, rng):
    """Optical blur, then per-channel sensor noise."""
    sigma = rng.uniform(*style.blur_sigma)
    if sigma > 0.05:
        rgb = ndimage.gaussian_filter(rgb, (sigma, sigma, 0), truncate=2.5)
    noise = _uniform_noise(rng, rgb.shape)
    noise *= np.float32(rng.uniform(*style.noise_sigma))
    return rgb + noise


def render_scene(domain_name, rng, size=(128, 256)):
    """Draws one street scene of a synthetic domain.

    Args:
        domain_name: one of `SYNTHETIC_DOMAINS`.
        rng: a `np.random.Generator` (or an int seed); all randomness comes
            from it.
        size: ``(height, width)`` in pixels.

    Returns:
        ``(image, label)``: ``uint8 [H, W, 3]`` RGB and ``uint8 [H, W]`` raw
        ids in the domain's on-disk numbering.
    """
    style = style_of(domain_name)
    height, width = check_size(size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    roll = math.radians(rng.uniform(-style.roll_degrees, style.roll_degrees))
    # Draw on a padded canvas so a rolled crop never leaves it.
    max_tilt = abs(math.sin(math.radians(style.roll_degrees)))
    pad = int(math.ceil(max_tilt * max(height, width) / 2)) + 2
    canvas_h, canvas_w = height + 2 * pad, width + 2 * pad
    horizon = pad + height * rng.uniform(*style.horizon)
    bottom = pad + height  # ground row of depth s = 1
    ground_px = bottom - horizon
    camera_height = rng.uniform(*style.camera_height)
    canvas = _Canvas(
        canvas_h, canvas_w, rng, style,
        horizon=horizon,
        vanish_x=pad + width * rng.uniform(0.35, 0.65),
        pixels_per_metre=ground_px / camera_height,
        ground_px=ground_px,
    )  # fmt: skip

    road_half = rng.uniform(3.0, 6.0)
    centre = rng.uniform(-0.6, 0.6) * road_half  # camera's lane offset
    street = {
        "centre": centre,
        "road_half_width": road_half,
        "left_edge": centre - road_half - rng.uniform(1.5, 4.5),
        "right_edge": centre + road_half + rng.uniform(1.5, 4.5),
        "lane_offset": rng.uniform(-0.5, 0.5) * road_half,
    }
    z_far = rng.uniform(12.0, 30.0)

    _draw_sky(canvas)
    _draw_street_end(canvas, street, z_far)
    _draw_side(canvas, -1, street, z_far)
    _draw_side(canvas, +1, street, z_far)
    _draw_ground(canvas, street, z_far)
    if rng.random() < style.fence_probability:
        side = -1 if rng.random() < 0.5 else 1
        z_near = rng.uniform(0.5, 4.0)
        _draw_fence(canvas, street, side, z_near, z_near + rng.uniform(2.0, 12.0))
    _place_objects(canvas, street, z_far)
    _light(canvas, street)
    if style.hood:
        _draw_hood(canvas, bottom)

    rgb, label = _crop(canvas, height, width, pad, roll)
    rgb = _grade(rgb, style, rng)
    rgb = _camera_effects(rgb, style, rng)
    image = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image, raw_id_table(domain_name)[label]


def _crop(canvas, height, width, pad, roll):
    """The output window of the canvas, rotated by `roll` radians.

    Nearest-neighbour sampling moves image and label pixels together, so they
    stay aligned exactly.
    """
    if abs(roll) < 1e-3:
        window = np.s_[pad : pad + height, pad : pad + width]
        return canvas.rgb[window], canvas.label[window]
    rows = np.arange(height, dtype=np.float32)[:, None] - (height - 1) / 2
    cols = np.arange(width, dtype=np.float32)[None, :] - (width - 1) / 2
    cos, sin = math.cos(roll), math.sin(roll)
    src_rows = np.rint(cos * rows - sin * cols + (canvas.height - 1) / 2).astype(np.intp)
    src_cols = np.rint(sin * rows + cos * cols + (canvas.width - 1) / 2).astype(np.intp)
    np.clip(src_rows, 0, canvas.height - 1, out=src_rows)
    np.clip(src_cols, 0, canvas.width - 1, out=src_cols)
    flat = src_rows * canvas.width + src_cols
    rgb = np.take(canvas.rgb.reshape(-1, 3), flat, axis=0)
    return rgb, np.take(canvas.label, flat)


def check_size(size):
    """``(height, width)`` as ints, at least 32x32; a ConfigError otherwise."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (height, width), got {size!r}") from None
    if height < 32 or width < 32:
        raise ConfigError(f"size must be at least 32x32 pixels, got {height}x{width}")
    return height, width
