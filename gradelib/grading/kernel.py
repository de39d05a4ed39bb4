"""The kernel every grading run starts: quick profile, no grader tell-tales, and (when asked) a sandbox."""

from __future__ import annotations

import os

from jupyter_client.manager import AsyncKernelManager

GRADER_ENV_HIDDEN = ("NBGRADER_EXECUTION", "NBGRADER_VALIDATING")


class GradingKernelManager(AsyncKernelManager):
    """Starts grading kernels in the quick profile, without nbgrader's tell-tale environment variables."""

    async def _async_pre_start_kernel(self, **kw):
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        env = dict(kw.get("env") or os.environ)
        for name in GRADER_ENV_HIDDEN:
            env.pop(name, None)
        env["GRADELIB_PROFILE"] = "quick"
        env.pop("MPLBACKEND", None)
        kw["env"] = env
        return kernel_cmd, kw
