#version 430
// An occluder's surface: its colour, mottled by the background noise texture (a textured card or box face),
// at its depth, with the occluder class; rectangles fill the quad, ellipses cut it round.

layout(std430, binding = 8) readonly buffer Occluders { float occ[]; };
layout(std430, binding = 12) readonly buffer Seeds { float seeds[]; };  // (B) texture offset of each sample

uniform sampler2D noise;
uniform float occluder_class;  // class id / 255
uniform int max_occluders;
uniform int n_fields;

flat in int v_row;
flat in int v_instance;
in vec2 v_local;

layout(location = 0) out vec4 out_colour;
layout(location = 1) out float out_depth;
layout(location = 2) out float out_class;
layout(location = 3) out vec4 out_normal;
layout(location = 4) out vec4 out_pncc;

vec3 linear_to_srgb(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(12.92 * c, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(vec3(0.0031308), c));
}

void main() {
    if (occ[v_row] > 1.5 && dot(v_local, v_local) > 1.0) discard;  // ellipse
    float grain = textureLod(noise, 0.5 * v_local + vec2(seeds[v_instance], 0.17 * float(v_row / n_fields - v_instance * max_occluders)), 1.0).b - 0.5;
    vec3 c = vec3(occ[v_row + 6], occ[v_row + 7], occ[v_row + 8]) * (1.0 + 2.0 * occ[v_row + 9] * grain)
             * (1.05 - 0.1 * v_local.y);  // lit from above
    out_colour = vec4(linear_to_srgb(c), 1.0);
    out_depth = occ[v_row + 10];
    out_class = occluder_class;
    out_normal = vec4(0.0, 0.0, -1.0, 1.0);
    out_pncc = vec4(0.0);
}
