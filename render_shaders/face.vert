#version 430
// Many faces per draw: instance i reads its camera-space vertices from SSBOs and lands in tile i of an
// atlas. Clip distances cut each face at its tile's borders, so tiles never bleed into each other.
// Pixel convention (README, "Conventions"): pixel (u, v) covers [u, u+1) x [v, v+1); GL window row r is image row v,
// so the framebuffer reads back top row first without a flip.

layout(std430, binding = 0) readonly buffer Positions { float positions[]; };  // (B*V*3) camera mm
layout(std430, binding = 1) readonly buffer Normals { float normals[]; };      // (B*V*3) unit, camera
layout(std430, binding = 2) readonly buffer Albedo { float albedo[]; };        // (B*V*3) linear RGB
layout(std430, binding = 3) readonly buffer Cameras { vec4 cameras[]; };       // (B) fx, fy, cx, cy
layout(std430, binding = 9) readonly buffer Hair { float hair[]; };            // (B*9) params/hair
layout(std430, binding = 14) readonly buffer ShadowFrames { vec4 shadow_frames[]; };  // (B*4) render.shadow_frames

uniform int n_vertices;
uniform int first_tile;      // instance k is drawn in tile first_tile + k
uniform ivec2 grid;          // tiles per row, tile rows
uniform vec2 tile_size;      // W, H in pixels
uniform vec2 depth_range;    // near, far in mm
#ifndef HAIR_PASS  // 1: draw the hair shell (scalp pushed out along the normals) instead of the head
#define HAIR_PASS 0
#endif
#ifndef SHADOW_PASS  // 1: draw into the sample's shadow tile, seen from the light (orthographic)
#define SHADOW_PASS 0
#endif

in vec3 in_pncc;             // per-vertex normalized coordinate code, shared by all instances
in float in_occlusion;       // per-vertex ambient occlusion of the mean shape (1 = open), shared
in float in_region;          // per-vertex segmentation class id, shared
in float in_hairline;        // distance from the face/scalp border along the head, mm (synthface.hair)
in float in_temple;          // temple weight of the hairline's recession, [0, 1]
in vec4 in_face_hair;        // brow s, brow t (mm), beard zone, beard height (synthface.hair.face_hair_fields)
in vec2 in_collar;           // depth below the neck's base (mm), V-neck weight (synthface.clothes.collar_fields)
in vec2 in_iris;             // place on the eyeball in iris radii (synthface.render.iris_field; 1e4 off the eyes)

out vec3 v_normal;
out vec3 v_albedo;
out vec3 v_pncc;
out vec3 v_position;
out float v_occlusion;
flat out float v_region;
out float v_hair;            // distance past this sample's hairline, mm (hair where > 0)
centroid out vec2 v_collar;
out vec2 v_iris;
centroid out vec4 v_face_hair;  // centroid: MSAA edge pixels must not extrapolate (t jumps to NO_BROW_T)
out float v_depth;
flat out int v_instance;
invariant gl_Position;  // the heads' depth pre-pass and their colour pass must agree to the bit ('<=')

void main() {
    int i = 3 * (gl_InstanceID * n_vertices + gl_VertexID);
    vec3 p = vec3(positions[i], positions[i + 1], positions[i + 2]);
    vec3 normal = vec3(normals[i], normals[i + 1], normals[i + 2]);
    int h = 9 * gl_InstanceID;  // coverage, hairline, recession, thickness, rgb, strands, sheen
    v_hair = hair[h] > 0.5 ? in_hairline - hair[h + 1] - hair[h + 2] * in_temple : -1000.0;
    if (HAIR_PASS == 1) {
        // 1 mm above the skin everywhere (no depth fight), the full thickness 20 mm past the hairline
        p += normal * (1.0 + hair[h + 3] * smoothstep(0.0, 20.0, v_hair));
    }
    int t = first_tile + gl_InstanceID;
    vec2 tile = vec2(t % grid.x, t / grid.x);
    if (SHADOW_PASS == 1) {
        int f = 4 * gl_InstanceID;  // rows u, v, w, centre (synthface.render.shadow_frames)
        vec3 d = p - shadow_frames[f + 3].xyz;
        vec3 q = vec3(dot(d, shadow_frames[f].xyz), dot(d, shadow_frames[f + 1].xyz), 0.0) / shadow_frames[f].w;
        q.z = dot(d, shadow_frames[f + 2].xyz) / shadow_frames[f + 1].w;
        gl_ClipDistance[0] = 1.0 + q.x;
        gl_ClipDistance[1] = 1.0 - q.x;
        gl_ClipDistance[2] = 1.0 + q.y;
        gl_ClipDistance[3] = 1.0 - q.y;
        gl_Position = vec4(2.0 * (tile + 0.5 * q.xy + 0.5) / vec2(grid) - 1.0, q.z, 1.0);
    } else {
        vec4 cam = cameras[gl_InstanceID];
        // u·z and v·z are linear in p, so the clip distances and clip-space x, y interpolate exactly.
        float uz = cam.x * p.x + cam.z * p.z;
        float vz = cam.y * p.y + cam.w * p.z;
        gl_ClipDistance[0] = uz;
        gl_ClipDistance[1] = tile_size.x * p.z - uz;
        gl_ClipDistance[2] = vz;
        gl_ClipDistance[3] = tile_size.y * p.z - vz;
        vec2 corner = tile * tile_size;
        vec2 atlas = vec2(grid) * tile_size;
        float n = depth_range.x, f = depth_range.y;
        gl_Position = vec4(2.0 * (corner.x * p.z + uz) / atlas.x - p.z,
                           2.0 * (corner.y * p.z + vz) / atlas.y - p.z,
                           p.z * (f + n) / (f - n) - 2.0 * f * n / (f - n),
                           p.z);
    }
    v_normal = normal;
    v_albedo = vec3(albedo[i], albedo[i + 1], albedo[i + 2]);
    v_pncc = in_pncc;
    v_position = p;
    v_occlusion = in_occlusion;
    v_region = in_region;
    v_face_hair = in_face_hair;
    v_collar = in_collar;
    v_iris = in_iris;
    v_depth = p.z;
    v_instance = gl_InstanceID;
}
