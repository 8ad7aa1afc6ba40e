"""OpenGL rasteriser (moderngl, headless EGL) for scenes of posed primitive meshes, with exact ground truth.

One pass writes two attachments: the shaded RGB (RGBA8) and a "G-buffer" (RGBA32F) holding the view-space
z-depth written by the fragment shader (exact metric z, not the non-linear depth buffer), the instance id and
the semantic id (small integers, exact in float32). The projection is built from ``K`` so that a world point
projected with ``K`` (see ``datagen.scenes.geometry``) lands on the pixel where it is rendered. Read-back flips GL's
bottom-up rows into the (x = column, y = row, origin top-left) convention.

Unit meshes (every one fits the box [-0.5, 0.5]^3 exactly) are built once per (shape, tessellation) and
uploaded once per process; a scene only sets a model matrix per draw. One context, program and framebuffer
are reused per process (created lazily, re-created after a fork or an image-size change). A renderer is not
thread-safe: use processes, not threads, for parallel generation.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import numpy as np

from spatialboost.datagen.scenes.geometry import rigid_inverse
from spatialboost.errors import UserError

log = logging.getLogger(__name__)

SHAPES = ("box", "sphere", "cylinder", "cone", "pyramid", "torus", "quad")
MATERIAL_PLAIN, MATERIAL_CHECKER = 0, 1
NEAR, FAR = 0.05, 100.0  # metres, clip planes
SHADOW_SEGMENTS = 12  # shadows use coarser meshes: fewer thin flattened triangles for the rasteriser


class RendererUnavailableError(UserError):
    """No headless OpenGL (EGL) context could be created."""


@dataclass(frozen=True)
class DrawItem:
    """One posed unit mesh: ``model`` maps the unit mesh ([-0.5, 0.5]^3) to the world."""

    shape: str  # one of SHAPES
    model: np.ndarray  # (4, 4) float64, local -> world (may scale)
    albedo: tuple[float, float, float]  # linear RGB in [0, 1]
    instance_id: int = 0  # 0 = not an object
    semantic_id: int = 0
    material: int = MATERIAL_PLAIN
    albedo2: tuple[float, float, float] = (0.0, 0.0, 0.0)  # second checker colour
    tile: float = 0.5  # checker tile size, metres (world xy)


@dataclass(frozen=True)
class Light:
    direction: tuple[float, float, float]  # unit vector from the surface towards the light (world)
    ambient: float = 0.35
    diffuse: float = 0.65


@dataclass
class RenderedView:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, metres, z-depth, 0 = nothing rendered
    instance: np.ndarray  # (H, W) int32
    semantic: np.ndarray  # (H, W) uint8


# ----------------------------------------------------------------------------------------------- projection


def projection_from_K(
    K: np.ndarray, width: int, height: int, near: float = NEAR, far: float = FAR
) -> np.ndarray:
    """(4, 4) GL clip matrix for OpenCV camera points: NDC x = 2u/W - 1, NDC y = 1 - 2v/H, w = z."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4))
    P[0, 0], P[0, 2] = 2.0 * fx / width, 2.0 * cx / width - 1.0
    P[1, 1], P[1, 2] = -2.0 * fy / height, 1.0 - 2.0 * cy / height
    P[2, 2], P[2, 3] = (far + near) / (far - near), -2.0 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


# ----------------------------------------------------------------------------------------------- unit meshes


@functools.lru_cache(maxsize=64)
def unit_mesh(shape: str, segments: int = 32) -> np.ndarray:
    """Non-indexed triangle list (T * 3, 6) float32 of (position, normal) filling [-0.5, 0.5]^3 tightly.

    Vertices lie on the true surface, so the mesh is inside the solid and inside its box.
    """
    builders = {
        "box": _box_mesh,
        "sphere": _sphere_mesh,
        "cylinder": _cylinder_mesh,
        "cone": _cone_mesh,
        "pyramid": _pyramid_mesh,
        "torus": _torus_mesh,
        "quad": _quad_mesh,
    }
    if shape not in builders:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    pos, nrm = builders[shape](max(8, segments))
    nrm = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
    return np.concatenate([pos, nrm], axis=1).astype(np.float32)


def _box_mesh(_: int) -> tuple[np.ndarray, np.ndarray]:
    pos, nrm = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u, v = np.eye(3)[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3]
            c = 0.5 * n
            quad = [c + 0.5 * (a * u + b * v) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            for i in (0, 1, 2, 0, 2, 3):
                pos.append(quad[i])
                nrm.append(n)
    return np.array(pos), np.array(nrm)


def _grid_triangles(grid: np.ndarray) -> np.ndarray:
    """(R, C, D) grid of vertex attributes -> (2 (R-1)(C-1) * 3, D) triangle list."""
    a, b, c, d = grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]
    tris = np.stack([a, b, c, a, c, d], axis=2)  # (R-1, C-1, 6, D)
    return tris.reshape(-1, grid.shape[-1])


def _sphere_mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0.0, np.pi, n // 2 + 1)[:, None]  # polar
    phi = np.linspace(0.0, 2 * np.pi, n + 1)[None, :]
    unit = np.stack(
        np.broadcast_arrays(np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)), -1
    )
    tris = _grid_triangles(unit)
    return 0.5 * tris, tris


def _disk(z: float, n: int, normal_sign: float) -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0.0, 2 * np.pi, n + 1)
    rim = np.stack([0.5 * np.cos(phi), 0.5 * np.sin(phi), np.full_like(phi, z)], -1)
    center = np.array([0.0, 0.0, z])
    pos = np.stack([np.broadcast_to(center, rim[:-1].shape), rim[:-1], rim[1:]], axis=1).reshape(-1, 3)
    return pos, np.tile([0.0, 0.0, normal_sign], (len(pos), 1))


def _cylinder_mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0.0, 2 * np.pi, n + 1)
    z = np.array([-0.5, 0.5])[:, None]
    grid_pos = np.stack(np.broadcast_arrays(0.5 * np.cos(phi)[None], 0.5 * np.sin(phi)[None], z), -1)
    grid_nrm = np.stack(np.broadcast_arrays(np.cos(phi)[None], np.sin(phi)[None], 0.0 * z), -1)
    side_pos, side_nrm = _grid_triangles(grid_pos), _grid_triangles(grid_nrm)
    top, top_n = _disk(0.5, n, 1.0)
    bottom, bottom_n = _disk(-0.5, n, -1.0)
    return np.concatenate([side_pos, top, bottom]), np.concatenate([side_nrm, top_n, bottom_n])


def _cone_mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0.0, 2 * np.pi, n + 1)
    mid = 0.5 * (phi[:-1] + phi[1:])
    rim = np.stack([0.5 * np.cos(phi), 0.5 * np.sin(phi), np.full_like(phi, -0.5)], -1)
    apex = np.broadcast_to([0.0, 0.0, 0.5], rim[:-1].shape)
    pos = np.stack([rim[:-1], rim[1:], apex], axis=1).reshape(-1, 3)

    def side_normal(a: np.ndarray) -> np.ndarray:  # radius 0.5, height 1: n ~ (cos, sin, r / h)
        return np.stack([np.cos(a), np.sin(a), np.full_like(a, 0.5)], -1)

    nrm = np.stack([side_normal(phi[:-1]), side_normal(phi[1:]), side_normal(mid)], axis=1).reshape(-1, 3)
    base, base_n = _disk(-0.5, n, -1.0)
    return np.concatenate([pos, base]), np.concatenate([nrm, base_n])


def _pyramid_mesh(_: int) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [-0.5, 0.5, -0.5]])
    apex = np.array([0.0, 0.0, 0.5])
    pos, nrm = [], []
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        n = np.cross(b - a, apex - a)
        pos += [a, b, apex]
        nrm += [n, n, n]
    for i in (0, 2, 1, 0, 3, 2):
        pos.append(corners[i])
        nrm.append([0.0, 0.0, -1.0])
    return np.array(pos), np.array(nrm)


TORUS_MAJOR, TORUS_MINOR = 0.35, 0.15  # before scaling z to fill [-0.5, 0.5]


def _torus_mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    phi = np.linspace(0.0, 2 * np.pi, n + 1)[None, :]  # around the ring
    theta = np.linspace(0.0, 2 * np.pi, n // 2 + 1)[:, None]  # around the tube
    ring = TORUS_MAJOR + TORUS_MINOR * np.cos(theta)
    pos = np.stack(
        np.broadcast_arrays(ring * np.cos(phi), ring * np.sin(phi), TORUS_MINOR * np.sin(theta)), -1
    )
    nrm = np.stack(
        np.broadcast_arrays(np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), np.sin(theta)), -1
    )
    sz = 0.5 / TORUS_MINOR  # stretch z to the unit box; normals take the inverse scale
    pos, nrm = pos * [1.0, 1.0, sz], nrm * [1.0, 1.0, 1.0 / sz]
    return _grid_triangles(pos), _grid_triangles(nrm)


def _quad_mesh(_: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
    pos = c[[0, 1, 2, 0, 2, 3]]
    return pos, np.tile([0.0, 0.0, 1.0], (6, 1))


# ----------------------------------------------------------------------------------------------- GL renderer

_VERTEX_SHADER = """
#version 330
uniform mat4 u_model;        // unit mesh -> world
uniform mat3 u_normal;       // inverse-transpose of u_model's 3x3
uniform mat4 u_world_to_cam; // world -> OpenCV camera
uniform mat4 u_proj;         // OpenCV camera -> GL clip, built from K
in vec3 in_pos;
in vec3 in_normal;
out vec3 v_world;
out vec3 v_normal;
out float v_z;
void main() {
    vec4 world = u_model * vec4(in_pos, 1.0);
    vec4 cam = u_world_to_cam * world;
    v_world = world.xyz;
    v_normal = u_normal * in_normal;
    v_z = cam.z;
    gl_Position = u_proj * cam;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 u_albedo;
uniform vec3 u_albedo2;
uniform int u_material;      // 0 plain, 1 checker on world xy
uniform float u_tile;
uniform vec3 u_light_dir;
uniform float u_ambient;
uniform float u_diffuse;
uniform vec3 u_eye;
uniform float u_instance;
uniform float u_semantic;
uniform int u_shadow;        // 1: a shadow flattened onto the floor, lit by ambient only
in vec3 v_world;
in vec3 v_normal;
in float v_z;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_gbuffer;   // (z-depth, instance, semantic, 1)
void main() {
    vec3 n = normalize(v_normal);
    if (dot(n, u_eye - v_world) < 0.0) n = -n;  // two-sided lighting
    vec3 albedo = u_albedo;
    if (u_material == 1) {
        float parity = mod(floor(v_world.x / u_tile) + floor(v_world.y / u_tile), 2.0);
        albedo = mix(u_albedo, u_albedo2, parity);
    }
    float lit = (u_shadow == 1) ? 0.0 : max(dot(n, u_light_dir), 0.0);
    float shade = u_ambient + u_diffuse * lit;
    f_color = vec4(clamp(albedo * shade, 0.0, 1.0), 1.0);
    f_gbuffer = vec4(v_z, u_instance, u_semantic, 1.0);
}
"""


def _mat4_bytes(M: np.ndarray) -> bytes:
    return np.ascontiguousarray(M.T, dtype=np.float32).tobytes()  # GL is column-major


class Renderer:
    """Owns one GL context, program, cached unit-mesh buffers and a framebuffer for the current size."""

    def __init__(self, segments: int = 32) -> None:
        try:
            # lazy: optional OpenGL renderer; without a GL context the CPU rasteriser is used
            import moderngl

            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as e:  # noqa: BLE001 - any failure here means "no headless GL"
            raise RendererUnavailableError(
                f"cannot create a headless OpenGL (EGL) context ({e}); on Debian/Ubuntu install the "
                "packages libegl1 and libgl1-mesa-dri (apt-get install libegl1 libgl1-mesa-dri)"
            ) from None
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.segments = segments
        self._vaos: dict[tuple[str, int], object] = {}
        self._fbo = None
        self._size: tuple[int, int] | None = None
        self.backend = f"moderngl-egl ({self.ctx.info['GL_RENDERER']})"

    def _vao(self, shape: str, segments: int):
        key = (shape, segments)
        if key not in self._vaos:
            vbo = self.ctx.buffer(unit_mesh(shape, segments).tobytes())
            self._vaos[key] = self.ctx.vertex_array(self.prog, [(vbo, "3f 3f", "in_pos", "in_normal")])
        return self._vaos[key]

    def _framebuffer(self, width: int, height: int):
        if self._size != (width, height):
            if self._fbo is not None:
                self._fbo.release()
            size = (width, height)
            color = self.ctx.renderbuffer(size, components=4)
            gbuffer = self.ctx.renderbuffer(size, components=4, dtype="f4")
            depth = self.ctx.depth_renderbuffer(size)
            self._fbo = self.ctx.framebuffer(color_attachments=[color, gbuffer], depth_attachment=depth)
            self._size = size
        return self._fbo

    def render(
        self,
        items: list[DrawItem],
        K: np.ndarray,
        cam_to_world: np.ndarray,
        width: int,
        height: int,
        light: Light,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        shadow_floor: DrawItem | None = None,
    ) -> RenderedView:
        """Draw ``items`` seen by camera (K, cam_to_world) and read the result back.

        The context is made current for the call (and the previous one restored): another GL user in the
        process (MuJoCo's renderer in ``eval.robot``) leaves its own context current. Callers of ``draw`` /
        ``read`` directly bind it themselves (``with renderer.ctx:``).
        """
        with self.ctx:
            self.draw(items, K, cam_to_world, width, height, light, background, shadow_floor)
            return self.read()

    def draw(
        self,
        items: list[DrawItem],
        K: np.ndarray,
        cam_to_world: np.ndarray,
        width: int,
        height: int,
        light: Light,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        shadow_floor: DrawItem | None = None,
    ) -> None:
        """Issue the draw calls into the framebuffer (asynchronous until ``read``).

        With ``shadow_floor`` (the floor item, lying in z = 0), every object (instance_id > 0) first casts a
        hard shadow: its mesh flattened onto z = 0 along the light, drawn with the floor's material and ids
        but no diffuse light. The shadow pass writes RGB only (no G-buffer, no depth), so ground truth is unchanged.
        """
        fbo = self._framebuffer(width, height)
        fbo.use()
        fbo.clear(*background, 0.0, depth=1.0)  # clears the G-buffer to 0: depth 0, ids 0
        self._set_frame_uniforms(K, cam_to_world, width, height, light)
        objects = [it for it in items if it.instance_id > 0]
        for item in items:
            if item.instance_id == 0:
                self._draw(item)
        if shadow_floor is not None:
            self._draw_shadows(objects, shadow_floor, light)
        for item in objects:
            self._draw(item)

    def _draw_shadows(self, objects: list[DrawItem], floor: DrawItem, light: Light) -> None:
        lx, ly, lz = light.direction
        if lz <= 1e-3:
            return  # grazing light: no finite shadow
        flatten = np.eye(4)  # p -> p - (p_z / l_z) l: projection onto z = 0 along the light
        flatten[0, 2], flatten[1, 2], flatten[2, 2] = -lx / lz, -ly / lz, 0.0
        fbo = self._fbo
        self.prog["u_shadow"].value = 1
        fbo.color_mask = [
            (True, True, True, True),
            (False, False, False, False),
        ]  # RGB only, never the G-buffer
        fbo.depth_mask = False
        self.ctx.polygon_offset = (-1.0, -4.0)  # win the depth test against the coplanar floor
        for item in objects:
            coarse = min(SHADOW_SEGMENTS, self.segments)
            self._draw(floor, model=flatten @ item.model, shape=item.shape, normal=np.eye(3), segments=coarse)
        self.ctx.polygon_offset = (0.0, 0.0)
        fbo.color_mask = [(True, True, True, True), (True, True, True, True)]
        fbo.depth_mask = True
        self.prog["u_shadow"].value = 0

    def finish(self) -> None:
        """Wait for the GPU (here: llvmpipe threads) to finish drawing; for timing only."""
        self.ctx.finish()

    def _set_frame_uniforms(self, K, cam_to_world, width, height, light: Light) -> None:
        p = self.prog
        p["u_world_to_cam"].write(_mat4_bytes(rigid_inverse(cam_to_world)))
        p["u_proj"].write(_mat4_bytes(projection_from_K(K, width, height)))
        p["u_light_dir"].value = tuple(float(v) for v in light.direction)
        p["u_ambient"].value = float(light.ambient)
        p["u_diffuse"].value = float(light.diffuse)
        p["u_eye"].value = tuple(float(v) for v in cam_to_world[:3, 3])
        p["u_shadow"].value = 0

    def _draw(self, item: DrawItem, model=None, shape=None, normal=None, segments=None) -> None:
        """Draw ``item`` (or its material and ids on another ``shape``/``model``, for shadows)."""
        p = self.prog
        model = item.model if model is None else model
        p["u_model"].write(_mat4_bytes(model))
        normal = np.linalg.inv(model[:3, :3]).T if normal is None else normal
        p["u_normal"].write(np.ascontiguousarray(normal.T, dtype=np.float32).tobytes())
        p["u_albedo"].value = item.albedo
        p["u_albedo2"].value = item.albedo2
        p["u_material"].value = item.material
        p["u_tile"].value = float(item.tile)
        p["u_instance"].value = float(item.instance_id)
        p["u_semantic"].value = float(item.semantic_id)
        self._vao(item.shape if shape is None else shape, segments or self.segments).render()

    def read(self) -> RenderedView:
        """The framebuffer as arrays in the image convention (rows top-down)."""
        fbo, (width, height) = self._fbo, self._size
        rgba = np.frombuffer(fbo.read(components=4, attachment=0), np.uint8).reshape(height, width, 4)
        g = np.frombuffer(fbo.read(components=4, attachment=1, dtype="f4"), np.float32).reshape(
            height, width, 4
        )
        rgba, g = rgba[::-1], g[::-1]  # GL rows run bottom-up
        return RenderedView(
            rgb=np.ascontiguousarray(rgba[..., :3]),
            depth=np.ascontiguousarray(g[..., 0]),
            instance=g[..., 1].astype(np.int32),
            semantic=g[..., 2].astype(np.uint8),
        )


_RENDERERS: dict[tuple[int, int], Renderer] = {}


def get_renderer(segments: int = 32) -> Renderer:
    """The process's renderer for this tessellation (created lazily; a forked child makes its own)."""
    key = (os.getpid(), segments)
    if key not in _RENDERERS:
        for stale in [k for k in _RENDERERS if k[0] != os.getpid()]:
            del _RENDERERS[stale]  # inherited across fork: never touch the parent's GL context
        _RENDERERS[key] = Renderer(segments)
        log.debug("created renderer %s", _RENDERERS[key].backend)
    return _RENDERERS[key]
