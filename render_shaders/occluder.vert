#version 430
// Occluders (synthface.params.OCCLUDER_FIELDS): flat shapes facing the camera at a given depth in front of
// the face, one quad per (sample, occluder); unused rows (kind 0) collapse to nothing.

layout(std430, binding = 8) readonly buffer Occluders { float occ[]; };  // (B * max_occluders * n_fields)

uniform int first_tile;
uniform ivec2 grid;
uniform vec2 tile_size;
uniform vec2 depth_range;
uniform int max_occluders;
uniform int n_fields;

flat out int v_row;     // first float of this occluder's row
flat out int v_instance;
out vec2 v_local;       // position in the shape's own frame, [-1, 1]²

const vec2 CORNERS[6] = vec2[6](vec2(-1, -1), vec2(1, -1), vec2(-1, 1), vec2(1, -1), vec2(1, 1), vec2(-1, 1));

void main() {
    int sample_ = gl_InstanceID / max_occluders;
    int row = gl_InstanceID * n_fields;
    // Fields: kind (0), x (1), y (2), width (3), height (4), angle (5), r g b (6-8), texture (9), z (10).
    vec2 c = CORNERS[gl_VertexID];
    float a = occ[row + 5];
    vec2 offset = mat2(cos(a), sin(a), -sin(a), cos(a)) * (0.5 * c * vec2(occ[row + 3], occ[row + 4]));
    vec2 pixel = (vec2(occ[row + 1], occ[row + 2]) + offset) * tile_size;  // within the tile
    float z = occ[row + 10];
    if (occ[row] < 0.5) z = -1.0;  // unused: behind the camera, clipped away
    // Stay inside the tile: clip distances, as for the faces.
    gl_ClipDistance[0] = pixel.x;
    gl_ClipDistance[1] = tile_size.x - pixel.x;
    gl_ClipDistance[2] = pixel.y;
    gl_ClipDistance[3] = tile_size.y - pixel.y;
    int t = first_tile + sample_;
    vec2 tile = vec2(t % grid.x, t / grid.x) * tile_size;
    vec2 atlas = vec2(grid) * tile_size;
    float n = depth_range.x, f = depth_range.y;
    gl_Position = vec4((2.0 * (tile + pixel) / atlas - 1.0) * z, z * (f + n) / (f - n) - 2.0 * f * n / (f - n), z);
    v_row = row;
    v_instance = sample_;
    v_local = c;
}
