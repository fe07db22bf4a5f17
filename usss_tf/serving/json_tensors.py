"""TF Serving's JSON encoding of predict requests and responses (REST API).

Request bodies come in one of two formats (see TF Serving's "RESTful API"):

* row ("instances"): a list with one entry per example; an entry is the value
  of the signature's only input, or an object mapping input names to values.
  Values are stacked along a new batch dimension.
* columnar ("inputs"): the value of the only input, or an object mapping input
  names to whole batched values.

Binary values (``DT_STRING`` inputs such as encoded images) are written
``{"b64": "<base64>"}``; a plain JSON string is taken as UTF-8 text. Answers
mirror the request: ``{"predictions": [...]}`` (one entry per example, an
object of outputs when there are several) or ``{"outputs": ...}``.
"""

import base64
import binascii

import numpy as np
import tensorflow as tf

from usss_tf.serving.signatures import dtype_name
from usss_tf.serving.status import invalid_argument


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _nested_shape(value, where):
    """The shape of a nested list, checking that it is rectangular."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_nested_shape(item, where) for item in value}
    if len(shapes) != 1:
        raise invalid_argument(f"{where}: nested lists of different lengths (a tensor must be rectangular)")
    return (len(value), *shapes.pop())


def _flatten(value):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _decode_string(value, where):
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise invalid_argument(f"{where}: 'b64' value is not valid base64") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(f"{where}: expected a string or {{\"b64\": ...}} for DT_STRING, got {value!r:.60}")


def decode_value(value, dtype, where):
    """One JSON value (a scalar or nested lists) as an array of the input's ``dtype``."""
    shape = _nested_shape(value, where)
    flat = list(_flatten(value))
    if dtype == tf.string:
        array = np.empty(len(flat), dtype=object)
        array[:] = [_decode_string(item, where) for item in flat]
        return array.reshape(shape)
    if any(isinstance(item, (dict, str)) or item is None for item in flat):
        bad = next(item for item in flat if isinstance(item, (dict, str)) or item is None)
        raise invalid_argument(f"{where}: expected numbers for {dtype_name(dtype)}, got {bad!r:.60}")
    try:
        return np.asarray(flat, dtype=dtype.as_numpy_dtype).reshape(shape)
    except (OverflowError, ValueError, TypeError) as error:
        raise invalid_argument(f"{where}: values do not fit {dtype_name(dtype)}: {error}") from None


def _input_dtypes(signature_def):
    return {name: tf.dtypes.as_dtype(info.dtype) for name, info in signature_def.inputs.items()}


def _named(value):
    """Whether ``value`` maps input names to values (rather than being the only input's value)."""
    return isinstance(value, dict) and not _is_b64(value)


def decode_request(body, signature_def):
    """(``{input: np.ndarray}``, row_format) from a parsed predict body for ``signature_def``."""
    if not isinstance(body, dict):
        raise invalid_argument("request body must be a JSON object")
    formats = [key for key in ("instances", "inputs") if key in body]
    if len(formats) != 1:
        raise invalid_argument('request body must have exactly one of "instances" (row format) or "inputs" (columnar)')
    unknown = sorted(set(body) - {"instances", "inputs", "signature_name"})
    if unknown:
        raise invalid_argument(f"request body has unknown key(s) {', '.join(map(repr, unknown))}")
    dtypes = _input_dtypes(signature_def)
    only = next(iter(dtypes)) if len(dtypes) == 1 else None
    if formats[0] == "inputs":
        value = body["inputs"]
        if _named(value):
            columns = value
        elif only is not None:
            columns = {only: value}
        else:
            raise invalid_argument(f'"inputs" must be an object with the inputs {sorted(dtypes)}')
        return _decode_columns(columns, dtypes), False
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise invalid_argument('"instances" must be a non-empty list, one entry per example')
    if all(_named(item) for item in instances):
        keys = set(instances[0])
        if any(set(item) != keys for item in instances):
            raise invalid_argument('every entry of "instances" must name the same inputs')
        columns = {name: [item[name] for item in instances] for name in keys}
    elif only is not None and not any(_named(item) for item in instances):
        columns = {only: instances}
    else:
        raise invalid_argument(f'each entry of "instances" must be an object with the inputs {sorted(dtypes)}')
    return _decode_columns(columns, dtypes), True


def _decode_columns(columns, dtypes):
    arrays = {}
    for name, value in columns.items():
        # Unknown names are left for the signature check to report with the
        # full list; decode them as whatever they look like.
        dtype = dtypes.get(name, tf.string if _contains_text(value) else tf.float32)
        arrays[name] = decode_value(value, dtype, f"input '{name}'")
    return arrays


def _contains_text(value):
    return any(isinstance(item, (str, dict)) for item in _flatten(value))


def _encode_array(array):
    if array.dtype.kind in "OS":
        flat = [{"b64": base64.b64encode(bytes(item)).decode("ascii")} for item in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def encode_response(outputs, row_format):
    """The JSON answer for ``outputs`` ({name: np.ndarray}) in the request's format."""
    encoded = {name: _encode_array(array) for name, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
    sizes = {len(value) if isinstance(value, list) else None for value in encoded.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid_argument(
            "outputs do not share a batch dimension, so they cannot be written as rows; "
            'send "inputs" (columnar) instead of "instances"'
        )
    if len(encoded) == 1:
        return {"predictions": next(iter(encoded.values()))}
    names = list(encoded)
    return {"predictions": [dict(zip(names, row)) for row in zip(*(encoded[n] for n in names))]}
