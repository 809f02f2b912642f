"""The entry point (``[project.entry-points.charlm] ssm``): registers the ``ssm`` block."""

import charlm
from charlm_ssm.block import SSMBlock
from charlm_ssm.config import SSMConfig


@charlm.hookimpl
def register_blocks(register):
    register("ssm", SSMBlock, config=SSMConfig, help="Mamba-2 style selective state space (chunked SSD scan)")
