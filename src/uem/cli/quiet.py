"""Keep image decoders from writing to the CLI's stderr, where each bad file gets exactly one line.

Corrupt files make Pillow emit Python warnings ("Corrupt EXIF data"), log records ("More samples
per pixel than can be decoded") and libtiff print its own errors straight to file descriptor 2
("LZWDecode: Not enough data at scanline 0"). The CLI already reports every unreadable file as one
`uemctl: error:` line, so all of it is noise that breaks that contract. Only the CLI process
does this: a host application that embeds the engine keeps its warnings and libtiff's handlers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import warnings


def quiet_image_libraries() -> None:
    """Ignore Pillow's warnings and log records, silence libtiff's stderr handler (best effort)."""
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    logging.getLogger("PIL").setLevel(logging.CRITICAL + 1)
    try:
        import PIL

        libs = glob.glob(os.path.join(os.path.dirname(PIL.__file__), os.pardir, "pillow.libs",
                                      "libtiff*.so*"))
        if not libs:  # a system Pillow links the system libtiff
            name = ctypes.util.find_library("tiff")
            libs = [name] if name else []
        for path in libs:
            set_handler = ctypes.CDLL(path).TIFFSetErrorHandler
            set_handler.restype, set_handler.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
            set_handler(None)
    except (OSError, AttributeError, ImportError):  # no libtiff found: nothing to silence
        pass
