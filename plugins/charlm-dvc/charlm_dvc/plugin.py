"""The entry point (``[project.entry-points.charlm] dvc``): registers the ``dvc`` data source."""

import charlm
from charlm_dvc.source import DvcConfig, DvcSource


@charlm.hookimpl
def register_data_sources(register):
    register("dvc", DvcSource, config=DvcConfig, help="files tracked by DVC at a git revision, fetched from a DVC remote")
