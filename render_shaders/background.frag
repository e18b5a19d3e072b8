#version 430
// Backgrounds (synthface.params.BACKGROUND_FIELDS / SHAPE_FIELDS): a solid colour, a procedural scene
// (gradient, thresholded fractal noise, fine texture, clutter shapes; all colours linear RGB), or an
// image crop prepared on the CPU (already sRGB, one texture layer per instance).

layout(std430, binding = 5) readonly buffer Backgrounds { float bg[]; };  // (B * n_fields)
layout(std430, binding = 6) readonly buffer Shapes { float shapes[]; };   // (B * max_shapes * 10)

uniform int n_fields;
uniform int max_shapes;
uniform float tile_pixels;      // image width = height, pixels
uniform sampler2D noise;        // tileable fractal noise, 4 independent channels, mipmapped
uniform sampler2DArray images;  // sRGB crops, layer = instance

flat in int v_instance;
in vec2 v_uv;

layout(location = 0) out vec4 out_colour;  // sRGB
layout(location = 1) out float out_depth;
layout(location = 2) out float out_class;
layout(location = 3) out vec4 out_normal;
layout(location = 4) out vec4 out_pncc;

vec3 linear_to_srgb(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(12.92 * c, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(vec3(0.0031308), c));
}

mat2 rotation(float a) { return mat2(cos(a), sin(a), -sin(a), cos(a)); }

float field(int k) { return bg[v_instance * n_fields + k]; }
vec3 colour(int k) { return vec3(field(k), field(k + 1), field(k + 2)); }

vec3 procedural(vec2 p) {
    // Field order: source, c0 (1-3), c1 (4-6), c2 (7-9), gradient angle (10), strength (11), noise scale (12),
    // angle (13), dx (14), dy (15), threshold (16), softness (17), detail (18), blur (19).
    // Explicit mip levels (texels per pixel, plus the defocus): implicit derivatives differ between the two
    // triangles of the quad at their shared edge, which MSAA would show as a seam.
    float lod = log2(max(256.0 * field(12) / tile_pixels, 1e-3)) + log2(1.0 + field(19));
    vec2 dir = vec2(cos(field(10)), sin(field(10)));
    vec3 c = mix(colour(1), colour(4), clamp(0.5 + dot(p - 0.5, dir), 0.0, 1.0) * field(11));
    vec2 q = rotation(field(13)) * (p * field(12)) + vec2(field(14), field(15));
    float n = textureLod(noise, q, lod).r;
    float soft = field(17);
    c = mix(c, colour(7), smoothstep(field(16) - soft, field(16) + soft, n));
    float fine = textureLod(noise, q * 3.17 + vec2(0.37, 0.61), lod + log2(3.17)).g - 0.5;
    c *= 1.0 + 2.0 * field(18) * fine;
    int base = v_instance * max_shapes * 10;
    for (int s = 0; s < max_shapes; ++s) {
        int o = base + 10 * s;
        float kind = shapes[o];
        if (kind < 0.5) break;  // used shapes come first
        vec2 d = rotation(-shapes[o + 5]) * (p - vec2(shapes[o + 1], shapes[o + 2]));
        vec2 half_size = 0.5 * vec2(shapes[o + 3], shapes[o + 4]);
        float sd = kind < 1.5 ? max(abs(d.x) - half_size.x, abs(d.y) - half_size.y)
                              : (length(d / half_size) - 1.0) * min(half_size.x, half_size.y);
        float alpha = 1.0 - smoothstep(-shapes[o + 9], shapes[o + 9], sd);
        // A shape carries the fine texture too, and a soft shading across it (light from above).
        vec3 sc = vec3(shapes[o + 6], shapes[o + 7], shapes[o + 8]) * (1.0 + 2.0 * field(18) * fine)
                  * (1.1 - 0.2 * clamp(0.5 + d.y / max(2.0 * half_size.y, 1e-3), 0.0, 1.0));
        c = mix(c, sc, alpha);
    }
    return linear_to_srgb(c);
}

void main() {
    float source = field(0);
    vec3 srgb;
    if (source < 0.5) {
        srgb = linear_to_srgb(colour(1));
    } else if (source < 1.5) {
        srgb = procedural(v_uv);
    } else {
        srgb = texture(images, vec3(v_uv, float(v_instance))).rgb;
    }
    out_colour = vec4(srgb, 1.0);
    out_depth = 0.0;
    out_class = 0.0;
    out_normal = vec4(0.0);
    out_pncc = vec4(0.0);
}
