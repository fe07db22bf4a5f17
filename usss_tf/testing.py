"""Hostile inputs for tests and benchmarks: images whose headers declare more than they hold.

A decompression bomb is a small file that declares a huge image: decoding it
allocates height x width x 3 bytes (108 MB for 6000x6000) before a single
pixel is read. The exported signatures must refuse these from the header
(``usss_tf.export.decode_images``); tests and ``benchmarks/serve_load.py``
send them.
"""

import io
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zero_png(width, height):
    """A valid RGB PNG of zeros, compressed row by row (never held decoded in memory).

    6000x6000 makes a 35 KB file that decodes to 108 MB.
    """
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # Filter byte + RGB.
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def png_declaring(png, width, height):
    """``png`` with its IHDR rewritten (CRC fixed) to declare ``width`` x ``height``."""
    data = bytearray(png)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_declaring(width, height, progressive=False):
    """A 16x16 JPEG (baseline or progressive) whose SOF header declares ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buffer, "JPEG", progressive=progressive)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bombs(width=6000, height=6000):
    """``{kind: bytes}``: a PNG, a baseline JPEG and a progressive JPEG declaring width x height."""
    return {
        "png": zero_png(width, height),
        "jpeg_baseline": jpeg_declaring(width, height, progressive=False),
        "jpeg_progressive": jpeg_declaring(width, height, progressive=True),
    }


def free_ports(count):
    """``count`` distinct TCP ports free on 127.0.0.1 now (held together while chosen)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
