"""Calling one SavedModel signature on a request's named inputs, checked first.

A ``SignatureRunner`` pairs a signature's ``SignatureDef`` (what the
MetaGraphDef declares: input and output names, dtypes, shapes) with the
concrete function ``tf.saved_model.load`` gives for it. Before anything runs,
the request's inputs are checked against the declaration, so a client gets
"input 'images': expected dtype DT_STRING, got DT_UINT8" instead of a
TensorFlow traceback. Errors the signature itself raises (bytes that are not an
image, images of different sizes in one batch) keep their TensorFlow code and
message. Concrete functions are safe to call from many threads at once.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from usss_tf.serving.status import from_tf_error, invalid_argument


_DTYPE_NAMES = {value: name for name, value in types_pb2.DataType.items()}


def dtype_name(dtype):
    """``tf.uint8`` -> ``"DT_UINT8"``, the spelling TF Serving's messages and metadata use."""
    return _DTYPE_NAMES[tf.dtypes.as_dtype(dtype).as_datatype_enum]


def declared_shape(tensor_info):
    """A ``TensorInfo``'s shape as a tuple with ``None`` for unknown sizes; ``None`` if rank is unknown."""
    shape = tensor_info.tensor_shape
    if shape.unknown_rank:
        return None
    return tuple(None if dim.size < 0 else dim.size for dim in shape.dim)


def _format_shape(shape):
    return "[" + ",".join("?" if size is None else str(size) for size in shape) + "]"


def array_dtype(array):
    """The TensorFlow dtype of a request array; bytes and str arrays are ``tf.string``."""
    if array.dtype.kind in "OSU":
        return tf.string
    return tf.dtypes.as_dtype(array.dtype)


class SignatureRunner:
    """Checks named inputs against one ``SignatureDef`` and calls its function.

    Args:
      name: the signature's key (e.g. ``segment_synth_city``).
      signature_def: its ``SignatureDef`` proto from the MetaGraphDef.
      function: the concrete function ``loaded.signatures[name]``.
    """

    def __init__(self, name, signature_def, function):
        self.name = name
        self.signature_def = signature_def
        self._function = function
        self.input_names = sorted(signature_def.inputs)
        self.output_names = sorted(signature_def.outputs)

    def check_inputs(self, specs):
        """Raises INVALID_ARGUMENT unless ``specs`` ({name: (tf.DType, shape)}) fit the signature."""
        where = f"signature '{self.name}'"
        missing = sorted(set(self.input_names) - set(specs))
        extra = sorted(set(specs) - set(self.input_names))
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing input(s) {', '.join(map(repr, missing))}")
            if extra:
                problems.append(f"unexpected input(s) {', '.join(map(repr, extra))}")
            raise invalid_argument(
                f"{where}: {'; '.join(problems)}; it takes: {', '.join(map(repr, self.input_names))}"
            )
        for name, (dtype, shape) in specs.items():
            info = self.signature_def.inputs[name]
            expected_dtype = tf.dtypes.as_dtype(info.dtype)
            if dtype != expected_dtype:
                raise invalid_argument(
                    f"{where}: input '{name}' expected dtype {dtype_name(expected_dtype)}, "
                    f"got {dtype_name(dtype)}"
                )
            expected_shape = declared_shape(info)
            if expected_shape is None:
                continue
            shape = tuple(shape)
            fits = len(shape) == len(expected_shape) and all(
                want is None or want == got for want, got in zip(expected_shape, shape)
            )
            if not fits:
                raise invalid_argument(
                    f"{where}: input '{name}' expected shape {_format_shape(expected_shape)} "
                    f"(rank {len(expected_shape)}), got {_format_shape(shape)} (rank {len(shape)})"
                )

    def check_output_filter(self, output_filter):
        """The output names to return: all when ``output_filter`` is empty; unknown names are errors."""
        if not output_filter:
            return list(self.output_names)
        unknown = sorted(set(output_filter) - set(self.output_names))
        if unknown:
            raise invalid_argument(
                f"signature '{self.name}': output_filter names unknown output(s) "
                f"{', '.join(map(repr, unknown))}; it has: {', '.join(map(repr, self.output_names))}"
            )
        return list(dict.fromkeys(output_filter))

    def run(self, arrays, output_filter=()):
        """Checks and runs the signature on ``arrays`` ({name: np.ndarray}); returns {output: np.ndarray}."""
        self.check_inputs({name: (array_dtype(a), a.shape) for name, a in arrays.items()})
        wanted = self.check_output_filter(output_filter)
        tensors = {name: tf.constant(array, dtype=self.signature_def.inputs[name].dtype)
                   for name, array in arrays.items()}
        try:
            outputs = self._function(**tensors)
        except tf.errors.OpError as error:
            raise from_tf_error(error, f"signature '{self.name}'") from None
        return {name: np.asarray(outputs[name]) for name in wanted}
