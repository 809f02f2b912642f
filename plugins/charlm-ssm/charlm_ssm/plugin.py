"""The entry point (``[project.entry-points.charlm] ssm``): registers the ``ssm`` block.

The block is named as ``"module:attr"``, so loading the plugin imports only its options
(no torch): ``charlm list-plugins`` and ``config validate`` stay fast.
"""

import charlm
from charlm_ssm.config import SSMConfig


@charlm.hookimpl
def register_blocks(register):
    register("ssm", "charlm_ssm.block:SSMBlock", config=SSMConfig, help="Mamba-2 style selective state space (chunked SSD scan)")
