#version 430
// Edge anti-aliasing after the one-sample pass (RenderSettings.antialias = "edges"). The exact class
// buffer says where an edge is: a pixel whose segmentation class differs from a 4-neighbour's (a
// silhouette against the background, a region border, the hairline's cut, an occluder). A depth jump
// inside one class is not used: steep smooth surfaces jump too, and their pixels must keep their colour.
// There, and only there, the colour is blended across the edge by
// the FXAA method (Lottes 2009): the edge's direction from the luma's second derivatives, its ends
// found by walking along it, the pixel's offset to the edge's true position estimated from its
// distance to the nearer end, and the colour mixed with the neighbour across the edge by that offset.
// Every other pixel (textures, skin, the background's detail) keeps its colour exactly. Reads stay
// inside the pixel's own tile of the atlas, so tiles never bleed into each other.

layout(binding = 0) uniform sampler2D colour;  // sRGB of the one-sample pass, the atlas
layout(binding = 1) uniform sampler2D classes; // segmentation class / 255

uniform ivec2 tile_pixels;  // tile width, height

out vec4 out_colour;

const int STEPS = 10;
const float STEP_SIZES[STEPS] = float[STEPS](1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 2.0, 2.0, 4.0, 8.0);

ivec2 lo, hi;  // this tile's first and last pixel

ivec2 at(ivec2 p) { return clamp(p, lo, hi); }
vec3 rgb(ivec2 p) { return texelFetch(colour, at(p), 0).rgb; }
float luma(ivec2 p) { return dot(rgb(p), vec3(0.299, 0.587, 0.114)); }

bool differs(ivec2 q, float c) { return abs(texelFetch(classes, at(q), 0).r - c) > 0.5 / 255.0; }

// Luma halfway between the edge's two rows (or columns) at `p` along the edge.
float edge_luma(vec2 p, ivec2 across) {
    ivec2 q = ivec2(floor(p));
    vec2 f = p - vec2(q);  // the walk is along one axis: interpolate there
    float a = luma(q), b = luma(q + across);
    ivec2 next = q + ivec2(f.x > 0.0 ? 1 : 0, f.y > 0.0 ? 1 : 0);
    float c = luma(next), d = luma(next + across);
    float w = max(f.x, f.y);
    return mix(0.5 * (a + b), 0.5 * (c + d), w);
}

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    lo = (p / tile_pixels) * tile_pixels;
    hi = lo + tile_pixels - 1;
    vec3 centre = rgb(p);
    out_colour = vec4(centre, 1.0);
    float c = texelFetch(classes, p, 0).r;
    if (!(differs(p + ivec2(1, 0), c) || differs(p - ivec2(1, 0), c) || differs(p + ivec2(0, 1), c)
          || differs(p - ivec2(0, 1), c))) {
        return;
    }
    float m = luma(p);
    float n = luma(p + ivec2(0, 1)), s = luma(p - ivec2(0, 1)), e = luma(p + ivec2(1, 0)), w = luma(p - ivec2(1, 0));
    float top = max(max(n, s), max(max(e, w), m)), bottom = min(min(n, s), min(min(e, w), m));
    float range = top - bottom;
    if (range < max(0.0312, 0.063 * top)) {
        return;  // no visible contrast across this edge
    }
    float ne = luma(p + ivec2(1, 1)), nw = luma(p + ivec2(-1, 1)), se = luma(p + ivec2(1, -1)), sw = luma(p + ivec2(-1, -1));
    // Sub-pixel term: how far the centre stands out of its 3 × 3 neighbourhood's average.
    float average = (2.0 * (n + s + e + w) + ne + nw + se + sw) / 12.0;
    float sub = smoothstep(0.0, 1.0, clamp(abs(average - m) / range, 0.0, 1.0));
    float sub_offset = 0.75 * sub * sub;
    // Horizontal edge (rows differ) when the vertical second derivatives dominate.
    float horizontal = abs(-2.0 * w + nw + sw) + 2.0 * abs(-2.0 * m + n + s) + abs(-2.0 * e + ne + se);
    float vertical = abs(-2.0 * n + nw + ne) + 2.0 * abs(-2.0 * m + e + w) + abs(-2.0 * s + sw + se);
    bool is_horizontal = horizontal >= vertical;
    float l1 = is_horizontal ? s : w, l2 = is_horizontal ? n : e;
    float g1 = l1 - m, g2 = l2 - m;
    bool first_steepest = abs(g1) >= abs(g2);
    float gradient = 0.25 * max(abs(g1), abs(g2));
    ivec2 across = is_horizontal ? (first_steepest ? ivec2(0, -1) : ivec2(0, 1))
                                 : (first_steepest ? ivec2(-1, 0) : ivec2(1, 0));
    float local = 0.5 * ((first_steepest ? l1 : l2) + m);
    vec2 along = is_horizontal ? vec2(1.0, 0.0) : vec2(0.0, 1.0);
    // Walk both ways along the edge until the luma between the two rows leaves the edge's.
    vec2 start = vec2(p);
    float d1 = 0.0, d2 = 0.0, end1 = 0.0, end2 = 0.0;
    bool done1 = false, done2 = false;
    for (int i = 0; i < STEPS && !(done1 && done2); ++i) {
        if (!done1) {
            d1 += STEP_SIZES[i];
            end1 = edge_luma(start - d1 * along, across) - local;
            done1 = abs(end1) >= gradient;
        }
        if (!done2) {
            d2 += STEP_SIZES[i];
            end2 = edge_luma(start + d2 * along, across) - local;
            done2 = abs(end2) >= gradient;
        }
    }
    bool towards1 = d1 < d2;
    float nearest = min(d1, d2);
    float offset = -nearest / (d1 + d2) + 0.5;
    // Only blend if the nearer end's luma moves away from the centre's (the edge really ends there).
    bool centre_smaller = m < local;
    bool right_way = ((towards1 ? end1 : end2) < 0.0) != centre_smaller;
    float blend = max(right_way ? offset : 0.0, sub_offset);
    out_colour = vec4(mix(centre, rgb(p + across), blend), 1.0);
}
