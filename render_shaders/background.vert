#version 430
// One quad per instance covering its tile of the atlas (the tile layout of face.vert), at the far plane:
// drawn after the faces with depth test '<=', it shades only the pixels they leave (the edges pass
// draws it with no depth test).

uniform int first_tile;
uniform ivec2 grid;
uniform vec2 tile_size;

flat out int v_instance;
out vec2 v_uv;  // position in the image: (0, 0) top-left corner, (1, 1) bottom-right

const vec2 CORNERS[6] = vec2[6](vec2(0, 0), vec2(1, 0), vec2(0, 1), vec2(1, 0), vec2(1, 1), vec2(0, 1));

void main() {
    vec2 c = CORNERS[gl_VertexID];
    int t = first_tile + gl_InstanceID;
    vec2 atlas = vec2(grid) * tile_size;
    vec2 pixel = vec2(t % grid.x, t / grid.x) * tile_size + c * tile_size;
    gl_Position = vec4(2.0 * pixel / atlas - 1.0, 1.0, 1.0);
    v_uv = c;
    v_instance = gl_InstanceID;
}
