"""Built-in synthetic domains: street scenes drawn with numpy, written to disk.

This is the embedded default that lets every command run on a fresh machine
with no downloads. Two domains share one scene grammar of 10 classes (road,
sidewalk, building, fence, pole, vegetation, sky, person, car, truck) but
differ the way real datasets do:

- ``synth_city`` (Cityscapes layout, raw Cityscapes labelIds): cool, grey-blue
  overcast daylight, pale plaster facades, sharp images with fine texture and
  little noise, a high camera with the horizon above the image centre and no
  roll, the ego car's hood at the bottom (raw id 1 "ego vehicle" -> ignore).
- ``synth_camvid`` (CamVid SegNet layout): warm, saturated evening light,
  brick and ochre facades, long shadows, coarse texture, blur and sensor
  noise, a low dashboard camera (bigger objects, horizon lower) with a slight
  roll. Its label space is smaller: car and truck are one class "vehicle";
  fence and pole have no class and their pixels are written as void (11), as
  CamVid does for things outside its label set.

Scenes are hard enough that a small network trained on a few images does not
saturate: colours of instances are jittered so classes overlap (grey cars on
grey roads, green cars next to trees), every surface has texture, light falls
off across the image, shadows cross class boundaries, and the number,
position and scale of objects vary.

Everything is deterministic: an image's random stream is derived from
``(seed, domain, split, index)`` with `np.random.SeedSequence`, so the same
seed writes byte-identical files and adding images never changes earlier ones.

Example:

>>> roots = write_synthetic_domains("/tmp/usss_data")  # doctest: +SKIP
>>> roots["synth_city"]  # doctest: +SKIP
PosixPath('/tmp/usss_data/synth_city')
"""

from usss_tf.data.synthetic.render import render_scene
from usss_tf.data.synthetic.style import SCENE_CLASSES, SYNTHETIC_DOMAINS
from usss_tf.data.synthetic.write import (
    GENERATOR_VERSION,
    MARKER_FILE,
    SPLITS,
    write_synthetic_domain,
    write_synthetic_domains,
)

__all__ = [
    "GENERATOR_VERSION", "MARKER_FILE", "SCENE_CLASSES", "SPLITS", "SYNTHETIC_DOMAINS",
    "render_scene", "write_synthetic_domain", "write_synthetic_domains",
]
