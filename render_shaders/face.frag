#version 430
// SH diffuse shading × ambient occlusion + a Blinn-Phong lobe; the basis, its constants and the specular
// term must match synthface/shading.py (tested). Cast shadows (a shadow map per sample) take away the
// directional light's share where the head or hair blocks it.

layout(std430, binding = 4) readonly buffer Lights { float lights[]; };  // (B*9*3): [b][k][channel]
layout(std430, binding = 7) readonly buffer Materials { float materials[]; };  // (B*3): specular, shininess, occlusion
layout(std430, binding = 9) readonly buffer Hair { float hair[]; };            // (B*9) params/hair
layout(std430, binding = 10) readonly buffer FacialHair { float facial_hair[]; };  // (B*11) params/facial_hair
layout(std430, binding = 11) readonly buffer Clothes { float clothes[]; };          // (B*13) params/clothes
layout(std430, binding = 12) readonly buffer Seeds { float seeds[]; };              // (B) texture offset of each sample
layout(std430, binding = 13) readonly buffer Eyes { float eyes[]; };                // (B*5) params/eyes
layout(std430, binding = 14) readonly buffer ShadowFrames { vec4 shadow_frames[]; };  // (B*4) render.shadow_frames

#ifndef HAIR_PASS  // 1: the hair shell's program; 0: the head's, which has no discard (early depth test)
#define HAIR_PASS 0
#endif
#ifndef DEPTH_ONLY  // 1: depth only, no shading (the shadow map; the heads' depth pre-pass); the hair
#define DEPTH_ONLY 0  //    shell still cuts its hairline
#endif
uniform int coverage_to_alpha;  // 1 in the MSAA colour pass: the hairline's coverage goes to alpha (alpha-to-coverage)
uniform sampler2D noise;     // the backgrounds' fractal noise: the hair's strands
uniform float hair_class;    // class id / 255
uniform float face_class;    // class id / 255
uniform float brows_class;   // class id / 255
uniform float neck_class;    // class id / 255
uniform float clothes_class; // class id / 255
uniform float eyes_class;    // class id / 255
uniform float skin_texture;  // 1: mottle the skin (models with regions); 0: their albedo as it is (BFM files)
uniform float mouth_class;   // class id / 255
uniform sampler2DShadow shadow_map;  // the shadow pass's depth atlas, one tile per sample as the image's
uniform float shadow_size;   // a shadow tile's side, texels
uniform int first_tile;      // sample k lies in tile first_tile + k
uniform ivec2 grid;          // tiles per row, tile rows
uniform vec3 eye_white;      // linear RGB of the unshadowed sclera (synthface.render.eye_white)
uniform vec3 pncc_extent;    // mm spanned by the PNCC code's [0, 1] on each axis (model space = v_pncc × this)

in vec3 v_normal;
in vec3 v_albedo;
in vec3 v_pncc;
in vec3 v_position;
in float v_occlusion;
flat in float v_region;
in float v_hair;
centroid in vec4 v_face_hair;
centroid in vec2 v_collar;
in vec2 v_iris;
in float v_depth;
flat in int v_instance;

layout(location = 0) out vec4 out_colour;  // sRGB
layout(location = 1) out float out_depth;  // camera-space z, mm
layout(location = 2) out float out_class;  // segmentation class id / 255 (an 8-bit normalised target)
layout(location = 3) out vec4 out_normal;  // unit camera-space normal
layout(location = 4) out vec4 out_pncc;

const float C1 = 1.1547005383792517;   // 2/sqrt(3)
const float C2 = 0.9682458365518543;   // sqrt(15)/4
const float C3 = 0.2795084971874737;   // sqrt(5)/8
// synthface.shading.KEY_TERMS and KEY_PEAK: a key light's clamped cosine as second-order SH hold it
const float K0 = 0.25, K1 = 0.5, K2 = 0.15625, KEY_PEAK = 1.0625;

// synthface.shading.key_falloff: a key light's share of its strength at cosine c of the angle to it.
float key_falloff(float c) { return (K0 + K1 * c + K2 * (3.0 * c * c - 1.0)) / KEY_PEAK; }

vec3 linear_to_srgb(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(12.92 * c, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(vec3(0.0031308), c));
}

vec3 h_dir(vec3 l, vec3 position) { return normalize(l + normalize(-position)); }  // camera at the origin

// Skin is not one flat colour: blotches of redness a few cm across and a finer mottle (model-space mm,
// so they stay on the skin as the head turns; the same for every sample's albedo render).
vec3 mottled_skin(vec3 albedo, vec3 p) {
    vec2 q = vec2(p.x + 0.5 * p.z, p.y);
    float blotch = texture(noise, q * 0.012 + seeds[v_instance]).g - 0.5;
    float mottle = texture(noise, q * 0.045 + vec2(0.5, 0.0) + seeds[v_instance]).r - 0.5;
    return albedo * (1.0 + skin_texture * 0.06 * mottle)
           * (1.0 - skin_texture * vec3(0.0, 0.12, 0.15) * blotch);
}

// Coverage of this sample's brows at brow coordinates (s along, t mm above the landmarks' line; ibug's
// brow points follow the brow's upper edge), lifted and arched by the sample's parameters.
float brow_cover(int f) {
    float s = v_face_hair.x, t = v_face_hair.y;
    float len = max(facial_hair[f + 4], 0.05);
    float along = clamp(s / len, 0.0, 1.0);
    float width = facial_hair[f] * mix(1.0, facial_hair[f + 1], along);
    // The centre line runs parallel to the landmarks' line, the tail's half-width below it: the thick
    // inner end spreads up and down (a brow's head), not down towards the eye (a frown).
    float centre = facial_hair[f + 3] + facial_hair[f + 2] * sin(3.14159265 * pow(along, 0.8))  // apex ~2/3 out
                   - 0.5 * facial_hair[f] * facial_hair[f + 1];
    float across = abs(t - centre) / max(0.5 * width, 0.1);
    float ends = smoothstep(-0.06, 0.05, s) * (1.0 - smoothstep(len - 0.15, len, s));
    // hairs: mottling stretched along them (up at the inner end, outwards along the tail)
    vec2 q = mix(vec2(s * 12.0, t * 0.12), vec2(s * 2.5, t * 0.6), along) + seeds[v_instance];
    float hairs = texture(noise, q).g;
    return facial_hair[f + 5] * ends * (1.0 - smoothstep(0.7, 1.1, across + 0.25 * (hairs - 0.5)))
           * mix(1.0, 0.75, along) * (0.8 + 0.4 * hairs);
}

// Stubble or beard coverage: the zone's density, cut at this sample's reach up the face, speckled.
float beard_cover(int f) {
    float reach = facial_hair[f + 7];
    float speck = texture(noise, v_pncc.xy * vec2(2.3, 3.1) + seeds[v_instance]).r;
    float fine = texture(noise, v_pncc.xy * vec2(19.0, 23.0) + vec2(0.0, 0.5) + seeds[v_instance]).b;
    float edge = 1.0 - smoothstep(reach - 0.3, reach, v_face_hair.w + 0.1 * (speck - 0.5));
    return facial_hair[f + 6] * v_face_hair.z * edge * (0.8 + 0.25 * (speck - 0.5) + 0.25 * (fine - 0.5));
}

// The cloth's albedo at model-space position p (mm): its colour, a woven pattern in the second colour
// (stripes, checks or heather, params/clothes pattern) and soft folds.
vec3 cloth_albedo(int c, vec3 p) {
    vec3 base = vec3(clothes[c + 3], clothes[c + 4], clothes[c + 5]);
    vec3 second = vec3(clothes[c + 7], clothes[c + 8], clothes[c + 9]);
    float period = max(clothes[c + 10], 0.5), angle = clothes[c + 11];
    vec2 along = vec2(cos(angle), sin(angle));
    float a = dot(p.xy, along) / period, b = dot(p.xy, vec2(-along.y, along.x)) / period;
    float band = smoothstep(0.4, 0.5, abs(fract(a) - 0.5));  // ~a fifth of each period in the second colour
    int kind = int(clothes[c + 6] + 0.5);
    float mixing = kind == 1 ? band
                 : kind == 2 ? 0.6 * max(band, smoothstep(0.4, 0.5, abs(fract(b) - 0.5)))
                 : kind == 3 ? 0.6 * texture(noise, p.xy * 0.11 + seeds[v_instance]).b : 0.0;
    vec3 albedo = mix(base, second, mixing);
    float fold = texture(noise, vec2(p.x * 0.004, p.y * 0.009) + vec2(0.5) + seeds[v_instance]).r - 0.5;
    return albedo * max(1.0 + 2.0 * clothes[c + 12] * fold, 0.2);
}

// The hair's strand pattern at this point of the head, in [-0.75, 0.75]: noise stretched along the
// height and around the azimuth (strands run down and back over the head).
float strand_noise() {
    vec3 c = v_pncc - 0.5;
    vec2 q = vec2(atan(c.x, c.z) * 2.0, c.y * 0.4);  // ~0.2 mm across a texel, ~2 mm along
    return texture(noise, q).a + 0.5 * texture(noise, q * vec2(3.1, 1.3)).b - 0.75;
}

// The eye at an eyeball pixel: the sample's iris (radial fibres, a darker collarette round the pupil and
// a dark limbal ring at its edge), the pupil and the sclera, edges blended over the pixel's footprint.
// The sclera's albedo carries the lid's shadow; the iris and pupil take the same shadow.
vec3 eye_albedo(vec3 sclera, int e) {
    float r = length(v_iris);
    float w = max(fwidth(r), 1e-3);
    vec3 iris = vec3(eyes[e], eyes[e + 1], eyes[e + 2]);
    float around = atan(v_iris.y, v_iris.x) / 6.2831853;  // one turn = the noise's period: no seam
    float fibres = texture(noise, vec2(around, 0.02 * r) + seeds[v_instance]).r
                   + 0.5 * texture(noise, vec2(3.0 * around, 0.05 * r) + seeds[v_instance]).g - 0.75;
    float pupil = eyes[e + 3];
    iris *= max(1.0 + 2.0 * eyes[e + 4] * fibres, 0.2)
            * mix(1.0, 0.75, 1.0 - smoothstep(pupil, pupil + 0.2, r))  // collarette
            * mix(1.0, 0.35, smoothstep(0.72, 1.0, r));                 // limbal ring
    vec3 shadow = sclera / eye_white;
    vec3 colour = mix(sclera, iris * shadow, 1.0 - smoothstep(1.0 - w, 1.0 + w, r));
    return mix(colour, vec3(0.008) * shadow, 1.0 - smoothstep(pupil - w, pupil + w, r));
}

// How much of the directional light reaches this point, in [0, 1]: its shadow tile looked up out along
// the normal and 1 mm nearer, four filtered taps (PCF: a soft edge ~2 texels wide); 1 where the sample has
// no shadows or the point lies outside its map. The taps reach ~2.5 texels sideways, where a surface at
// angle a to the light lies 2.5 tan(a) texels nearer it; stepping k texels out along the normal clears
// that when k >= 2.5 sin(a), so k grows with the slope (no acne) and stays small facing the light (no
// shadow pulled away from its caster).
float light_reaching(vec3 n, float cos_light) {
    int f = 4 * v_instance;
    float strength = shadow_frames[f + 3].w, half_size = shadow_frames[f].w, half_depth = shadow_frames[f + 1].w;
    if (strength <= 0.0) return 1.0;
    float texels = 0.5 + 2.75 * sqrt(max(1.0 - cos_light * cos_light, 0.0));
    vec3 d = v_position + n * (texels * 2.0 * half_size / shadow_size) - shadow_frames[f + 3].xyz;
    vec3 q = vec3(dot(d, shadow_frames[f].xyz), dot(d, shadow_frames[f + 1].xyz), 0.0) / half_size;
    q.z = dot(d, shadow_frames[f + 2].xyz) / half_depth;
    if (any(greaterThan(abs(q), vec3(1.0)))) return 1.0;
    int t = first_tile + v_instance;
    vec2 corner = vec2(t % grid.x, t / grid.x) * shadow_size;
    vec2 atlas = vec2(grid) * shadow_size;
    vec2 texel = clamp(corner + (0.5 * q.xy + 0.5) * shadow_size, corner + 1.25, corner + shadow_size - 1.25);
    float ref = 0.5 * q.z + 0.5 - 0.5 / half_depth;
    float lit = 0.0;
    for (int k = 0; k < 4; ++k) {
        vec2 o = vec2(k & 1, k >> 1) * 1.5 - 0.75;
        lit += texture(shadow_map, vec3((texel + o) / atlas, ref));
    }
    return mix(1.0, 0.25 * lit, strength);
}

const float FINE_HAIR_MM = 8.0;  // fine hairs thin out over this band below the shell's cut

void main() {
    if (DEPTH_ONLY == 1) {  // the hair shell casts from its ragged hairline, as drawn
        if (HAIR_PASS == 1 && v_hair - 3.0 * (strand_noise() + 0.75) < 0.0) discard;
        return;
    }
    float alpha = 1.0;
    float strand = 0.0;
    if (HAIR_PASS == 1) {  // the hairline first: pixels past it are discarded before they are shaded
        strand = strand_noise();
        float edge = v_hair - 3.0 * (strand + 0.75);  // a ragged hairline: hair where > 0
        if (coverage_to_alpha == 1) {
            alpha = clamp(edge / max(fwidth(edge), 1e-3) + 0.5, 0.0, 1.0);  // the pixel's share past the line
            if (alpha <= 0.0) discard;
        } else if (edge < 0.0) {
            discard;
        }
    }
    vec3 n = normalize(v_normal);
    float basis[9] = float[9](1.0, C1 * n.y, C1 * n.z, C1 * n.x, C2 * n.x * n.y, C2 * n.y * n.z,
                              C3 * (3.0 * n.z * n.z - 1.0), C2 * n.x * n.z, 0.5 * C2 * (n.x * n.x - n.y * n.y));
    vec3 irradiance = vec3(0.0);
    int base = 27 * v_instance;
    for (int k = 0; k < 9; ++k) {
        irradiance += basis[k] * vec3(lights[base + 3 * k], lights[base + 3 * k + 1], lights[base + 3 * k + 2]);
    }
    // The key light's direction and per-channel strength from SH band 1 (coefficients 1-3 hold y, z, x),
    // as synthface.shading.directional_light reads them.
    vec3 band1[3];
    for (int c = 0; c < 3; ++c) {
        band1[c] = C1 * vec3(lights[base + 9 + c], lights[base + 3 + c], lights[base + 6 + c]);
    }
    vec3 sum = band1[0] + band1[1] + band1[2];
    vec3 l = sum / max(length(sum), 1e-12);
    vec3 strength = vec3(length(band1[0]), length(band1[1]), length(band1[2])) * (KEY_PEAK / K1);
    // Shadowed: the key's share of the irradiance (synthface.shading.key_falloff) goes, and its highlight.
    float c_l = dot(n, l);
    float lit = c_l > 0.0 ? light_reaching(n, c_l) : 1.0;  // facing away: no direct light to block
    irradiance -= (1.0 - lit) * strength * max(key_falloff(c_l), 0.0);
    strength *= lit;
    vec3 h = h_dir(l, v_position);
    float ks = materials[3 * v_instance], shininess = materials[3 * v_instance + 1];
    float lobe = dot(n, l) > 0.0 ? pow(max(dot(n, h), 0.0), shininess) : 0.0;
    float occlusion = mix(1.0, v_occlusion, materials[3 * v_instance + 2]);
    float region = v_region;
    vec3 albedo = v_albedo;
    if (HAIR_PASS == 0) {
        vec3 model_mm = v_pncc * pncc_extent;  // where on the mean shape: skin and cloth patterns stay put
        if (v_iris.x < 1000.0) {  // an eyeball: the iris per pixel; the eye is wet and glossy
            albedo = eye_albedo(albedo, 5 * v_instance);
            ks = 0.6;
            shininess = 120.0;
            lobe = dot(n, l) > 0.0 ? pow(max(dot(n, h), 0.0), shininess) : 0.0;
        }
        if (abs(region - eyes_class * 255.0) > 0.5 && abs(region - mouth_class * 255.0) > 0.5) {
            albedo = mottled_skin(albedo, model_mm);
        }
        // A hairline is not a cut: below the shell's ragged edge (v_hair ~ 0–4.5 mm) fine hairs in the
        // hair's colour thin out over FINE_HAIR_MM, following the same strands.
        if (v_hair > -FINE_HAIR_MM) {
            int h = 9 * v_instance;
            float fine = smoothstep(-FINE_HAIR_MM, 4.0, v_hair) * clamp(strand_noise() + 0.6, 0.0, 1.0);
            albedo = mix(albedo, vec3(hair[h + 4], hair[h + 5], hair[h + 6]), 0.85 * fine);
        }
        int f = 11 * v_instance;
        vec3 colour = vec3(facial_hair[f + 8], facial_hair[f + 9], facial_hair[f + 10]);
        float beard = beard_cover(f);
        albedo = mix(albedo, colour, 0.7 * clamp(beard, 0.0, 1.0));
        float brow = v_face_hair.x > -5.0 ? clamp(brow_cover(f), 0.0, 1.0) : 0.0;
        albedo = mix(albedo, colour, brow);
        if (brow > 0.4) region = brows_class * 255.0;  // the class follows the drawn brow
        else if (abs(region - brows_class * 255.0) < 0.5) region = face_class * 255.0;
        // Clothes below this sample's neckline (deeper at the front centre by the V); bare skin above
        // it is neck. The class follows the cloth, so the edge pass smooths the neckline too.
        int c = 13 * v_instance;
        if (v_collar.x > -500.0) {
            float neckline = clothes[c + 1] + clothes[c + 2] * v_collar.y;
            if (clothes[c] > 0.5 && v_collar.x > neckline) {
                albedo = cloth_albedo(c, model_mm);
                ks *= 0.3;  // cloth is duller than skin
                region = clothes_class * 255.0;
            } else if (abs(region - clothes_class * 255.0) < 0.5) {
                region = neck_class * 255.0;
            }
        }
    }
    vec3 linear = albedo * occlusion * max(irradiance, 0.0) + ks * lobe * strength;
    if (HAIR_PASS == 1) {
        int h = 9 * v_instance;
        vec3 hair_colour = vec3(hair[h + 4], hair[h + 5], hair[h + 6]) * (1.0 + hair[h + 7] * 2.0 * strand);
        float sheen = hair[h + 8] * (dot(n, l) > 0.0 ? pow(max(dot(n, h_dir(l, v_position)), 0.0), 20.0) : 0.0);
        linear = hair_colour * max(irradiance, 0.0) + sheen * strength;
        region = hair_class * 255.0;
    }
    out_colour = vec4(linear_to_srgb(linear), alpha);
    out_depth = v_depth;
    out_class = region / 255.0;
    out_normal = vec4(n, 1.0);
    out_pncc = vec4(clamp(v_pncc, 0.0, 1.0), 1.0);  // the bust lies outside the head's box: clamped onto it
}
