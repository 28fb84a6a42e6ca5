"""Entry point of `uemctl`: registers the command modules and turns user mistakes into one line."""

from __future__ import annotations

import sys

from ..engine.errors import UemError
from . import bench as _bench  # noqa: F401  (each import registers its commands)
from . import data as _data  # noqa: F401
from . import demo as _demo  # noqa: F401
from . import eval as _eval  # noqa: F401
from . import export as _export  # noqa: F401
from . import index as _index  # noqa: F401
from . import info as _info  # noqa: F401
from . import query as _query  # noqa: F401
from . import serve as _serve  # noqa: F401
from . import train as _train  # noqa: F401
from .inputs import printable
from .quiet import quiet_image_libraries
from .root import app, err


def main(argv: list[str] | None = None) -> int:
    quiet_image_libraries()
    try:
        app(args=argv, prog_name="uemctl")
    except UemError as e:
        err.print(f"uemctl: error: {printable(str(e))}", markup=False)
        return 2
    except KeyboardInterrupt:
        err.print("uemctl: interrupted", markup=False)
        return 130
    except SystemExit as e:  # typer/click exit codes (usage errors are 2)
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def entry() -> None:
    """Console-script target."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
