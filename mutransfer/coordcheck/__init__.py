"""The coordinate check, a gate before a sweep: does the recipe's model keep every layer's update size flat as it
widens? If it does not, the learning rate found on the small proxies will not transfer to the target.

mup's coordinate check (Tensor Programs V, appendix D.1): build the model at a few widths, train each a few steps
on one fixed batch, and measure how much every layer's output moved, per coordinate (mean |h_t - h_0|), and how
large every attention call's logits can get (scale·|q|·|k|, found whatever the layers are called: `attention`). Under µP
that size does not depend on width: the slope of log(change) against log(width) is about 0 in every layer. A
layer whose slope is clearly positive "blows up" (a wider model would take larger and larger steps there, so its
optimal learning rate would shrink with width and would not transfer); a clearly negative slope "vanishes" (the
layer stops learning as width grows). `run_coord_check` does this for a recipe, `CoordCheckReport.summary()` says in
words which layers fail and the likely cause, and `figure` plots it (log-log, one line per layer, one panel per step).

Over depth (`run_coord_check(..., depths=[2, 4, 8])`, `mutransfer coord-check --depths`): the same measurement at
the base scale point's width, one model per depth. Only the residual stream the readout sees (`<stack>.last`, the
last block's output) and the logits are judged: an interior block's own change is expected to shrink as more blocks
share the update (it is reported, not judged). With a depth rule (model.depth_scaling depth-mup or completep) they
stay flat and the check passes; without one each block adds its own Θ(1) update, so they grow with depth: reported,
as SP's growth over width is, and not a failure. The thresholds and their calibration are in `report`.

The modules, in the order a check runs: `run` (a recipe -> widths, data, the model's structure, a report),
`measure` (the training and measurement itself; imports torch), `attention` (the attention calls, seen through a
TorchFunctionMode), `report` (verdicts, thresholds and their calibration, the report in words), `plot` (the
figure). Importing this package imports neither torch nor plotly:
the CLI catches `CheckError` and a stored report is read without them.
"""

from mutransfer.coordcheck.plot import figure, figure_data, save_figure
from mutransfer.coordcheck.report import (
    BLOW_UP,
    DEPTH_BLOW_UP,
    DEPTH_VANISH,
    KIND,
    KIND_DEPTH,
    VANISH,
    CoordCheckReport,
    LayerCheck,
    verdict,
)
from mutransfer.coordcheck.run import (
    CheckError,
    default_widths,
    is_stream,
    parse_depths,
    parse_widths,
    run_coord_check,
)

__all__ = [
    "BLOW_UP", "DEPTH_BLOW_UP", "DEPTH_VANISH", "KIND", "KIND_DEPTH", "VANISH", "CheckError", "CoordCheckReport",
    "LayerCheck", "default_widths", "figure", "figure_data", "is_stream", "parse_depths", "parse_widths",
    "run_coord_check", "save_figure", "verdict",
]
