"""mutransfer: tune small µP proxies, transfer the optimum to a large model.

The Python API is `mutransfer.api` (`import mutransfer.api as mt`; `mt.sweep(...)`, `mt.fit(...)`,
`mt.export(...)`, ...). Its functions whose names are not also module names are re-exported here too
(`mutransfer.open_store`, `mutransfer.render`, ...). `sweep`, `fit` and `export` are not: `mutransfer.sweep`,
`mutransfer.fit` and `mutransfer.export` are modules, and Python rebinds a package's attribute to its submodule
whenever that is first imported, so a re-exported function would turn into the module behind the user's back.
Importing this package is light (no torch, no Ray): each function imports what it uses.
"""

__version__ = "0.1.0"

from mutransfer import api  # noqa: E402
from mutransfer.api import (  # noqa: E402
    CoordCheck,
    Export,
    Fitted,
    Verification,
    coord_check,
    get_sweep,
    latest_fit,
    open_store,
    recipe_of,
    render,
    render_files,
    verify,
)
from mutransfer.errors import MutransferError, UsageError  # noqa: E402

__all__ = [
    "CoordCheck", "Export", "Fitted", "MutransferError", "UsageError", "Verification", "__version__", "api",
    "coord_check", "get_sweep", "latest_fit", "open_store", "recipe_of", "render", "render_files", "verify",
]
