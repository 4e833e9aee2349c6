"""The line side: deployment bundles, the check of one image per camera view, and watch mode.

One module per step of a check, in the order they run (:mod:`.checker` runs them, one view per thread):

==================== =================================================================================
module               step
==================== =================================================================================
:mod:`.image`        read the file (cut short or undecodable: refused) and sanity-check its pixels
:mod:`.registration` register to the view's reference with quality control, bring to map size
:mod:`.score`        the map and score with the view's model, mask and border margin, as calibrated
:mod:`.regions`      the raised share, the connected regions and the peak, in the camera's pixels
:mod:`.verdict`      clear / leftover / undecided, the result types and exit codes
:mod:`.overlay`      the original image with the boxes and a banner saying the verdict
==================== =================================================================================

Around them: :mod:`.views` loads a bundle view once (model, thresholds, mask, registrar),
:mod:`.matching` assigns image files to views by name, :mod:`.deploy` builds bundles from training
runs, :mod:`.watch` checks image sets as they appear in a folder.
"""
