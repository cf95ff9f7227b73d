"""Offscreen MuJoCo rendering that draws the scene once per frame and reads colour and depth from that one
pass. (``mujoco.Renderer`` draws it again for depth.) One GL context serves every camera and image size.

GL does not survive ``fork``: a child inherits an initialised EGL display (and Mesa's state) without the
driver threads behind it, and its first render hangs. So before any fork every renderer in the process
lets go of its context, and the EGL display is terminated; each opens a new one at its next render, in the
parent and in the child alike (gymnasium's ``AsyncVectorEnv`` forks environments after the parent checked
one's spaces).

Import after ``MUJOCO_GL`` is chosen (envs/mujoco_backend.py does that).
"""

from __future__ import annotations

import os
import weakref

import mujoco
import numpy as np

MAX_GEOMS = 2000


class OffscreenRenderer:
    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.max_width, self.max_height = model.vis.global_.offwidth, model.vis.global_.offheight
        self._free: weakref.finalize | None = None
        self._open()
        _RENDERERS.add(self)
        self._scene = mujoco.MjvScene(model, maxgeom=MAX_GEOMS)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        # z-buffer value -> metres along the optical axis (OpenGL's perspective projection, inverted)
        near = np.float32(model.vis.map.znear * model.stat.extent)
        far = np.float32(model.vis.map.zfar * model.stat.extent)
        self._depth_a = np.float32(0.5) * (far + near) / (far - near) - np.float32(0.5)
        self._depth_b = far * near / (far - near)

    def render(
        self, data: mujoco.MjData, camera_id: int, width: int, height: int, segmentation: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """RGB (H, W, 3) uint8, depth (H, W) float32 metres, and with ``segmentation`` the geom id of each
        pixel (-1 where no geom is)."""
        if width > self.max_width or height > self.max_height:
            raise ValueError(f"{width}x{height} exceeds the offscreen buffer {self.max_width}x{self.max_height}")
        if self._free is None:
            self._open()
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(self.model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        viewport = mujoco.MjrRect(0, 0, width, height)
        rgb = np.empty((height, width, 3), np.uint8)
        depth = np.empty((height, width), np.float32)
        mujoco.mjr_render(viewport, self._scene, self._context)
        mujoco.mjr_readPixels(rgb, depth, viewport, self._context)
        depth = self._depth_b / (depth + self._depth_a)
        geoms = self._segment(viewport) if segmentation else None
        return rgb[::-1].copy(), depth[::-1].copy(), geoms  # OpenGL's rows run bottom-up

    def _segment(self, viewport: mujoco.MjrRect) -> np.ndarray:
        flags = self._scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = True
        try:
            colour = np.empty((viewport.height, viewport.width, 3), np.uint8)
            mujoco.mjr_render(viewport, self._scene, self._context)
            mujoco.mjr_readPixels(colour, None, viewport, self._context)
        finally:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = False
        segid = colour[..., 0].astype(np.int64) + (colour[..., 1].astype(np.int64) << 8) + (colour[..., 2].astype(np.int64) << 16)
        lookup = np.full(self._scene.ngeom + 1, -1, np.int32)  # segment id + 1 -> geom id; 0 is the background
        for geom in self._scene.geoms[: self._scene.ngeom]:
            if geom.segid >= 0 and geom.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lookup[geom.segid + 1] = geom.objid
        return lookup[np.clip(segid, 0, len(lookup) - 1)][::-1].copy()

    def _open(self) -> None:
        self._gl = mujoco.GLContext(self.max_width, self.max_height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        # freed on close(), on garbage collection, or at exit while EGL is still loaded (not in teardown)
        self._free = weakref.finalize(self, _free, self._gl, self._context)

    def close(self) -> None:
        """Free the GL context; a later render opens a new one."""
        if self._free is not None:
            self._free()
            self._free = None
            self._gl = self._context = None


def _free(gl, context) -> None:
    gl.make_current()
    context.free()
    gl.free()


_RENDERERS: weakref.WeakSet[OffscreenRenderer] = weakref.WeakSet()


def _egl_display():
    """The EGL display mujoco initialised in this process, if any."""
    if os.environ.get("MUJOCO_GL") != "egl":
        return None
    import mujoco.egl

    return mujoco.egl.EGL_DISPLAY


def _release_gl_before_fork() -> None:
    for renderer in list(_RENDERERS):
        renderer.close()
    if (display := _egl_display()) is not None:
        mujoco.egl.EGL.eglTerminate(display)


def _restart_gl_after_fork() -> None:
    """Parent and child each initialise the display again, with driver state of their own."""
    if (display := _egl_display()) is not None:
        mujoco.egl.EGL.eglInitialize(display, None, None)


os.register_at_fork(before=_release_gl_before_fork, after_in_parent=_restart_gl_after_fork, after_in_child=_restart_gl_after_fork)
