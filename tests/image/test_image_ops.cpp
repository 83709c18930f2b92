// Image operations for editing (src/image/image_ops.h) and the RGBA PNG
// reader they use (read_png_rgba in src/io/png.h). Expected values are worked
// out by hand from the A1111 / PIL / OpenCV conventions the header cites.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>

#include <spng.h>

#include "core/error.h"
#include "image/image_ops.h"
#include "io/png.h"
#include "test_util.h"

using namespace diffuse;
using namespace diffuse::image;

namespace {

using diffuse::testing::error_of;

#define EXPECT_INVALID(stmt, fragment)                                      \
  do {                                                                      \
    Error e_ = error_of([&] { (void)(stmt); });                             \
    EXPECT_EQ(e_.code(), ErrorCode::kInvalidArgument) << e_.what();         \
    EXPECT_NE(std::string(e_.what()).find(fragment), std::string::npos)     \
        << "message '" << e_.what() << "' lacks '" << (fragment) << "'";    \
  } while (0)

Rgb make_rgb(int w, int h, uint8_t (*f)(int x, int y, int c)) {
  Rgb im;
  im.width = w;
  im.height = h;
  im.px.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) im.px[(static_cast<size_t>(y) * w + x) * 3 + c] = f(x, y, c);
  return im;
}

Rgb uniform_rgb(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  Rgb im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.px.insert(im.px.end(), {r, g, b});
  return im;
}

Gray make_gray(int w, int h, uint8_t v = 0) {
  Gray g;
  g.width = w;
  g.height = h;
  g.px.assign(static_cast<size_t>(w) * h, v);
  return g;
}

const uint8_t* at(const Rgb& im, int x, int y) { return &im.px[(static_cast<size_t>(y) * im.width + x) * 3]; }
uint8_t at(const Gray& m, int x, int y) { return m.px[static_cast<size_t>(y) * m.width + x]; }
void set(Gray& m, int x, int y, uint8_t v) { m.px[static_cast<size_t>(y) * m.width + x] = v; }
void fill_rect(Gray& m, int x0, int y0, int x1, int y1, uint8_t v) {
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) set(m, x, y, v);
}

// The 4x2 test image: every pixel distinct.
uint8_t px4x2(int x, int y, int c) {
  if (c == 0) return static_cast<uint8_t>(10 * x + 100 * y);
  if (c == 1) return static_cast<uint8_t>(50 + 2 * x);
  return static_cast<uint8_t>(200 - 20 * y);
}

// Row `sy`, column `sx` of the 4x2 image must be at (x, y) of `out`.
void expect_source_pixel(const Rgb& out, int x, int y, int sx, int sy) {
  for (int c = 0; c < 3; ++c)
    EXPECT_EQ(out.px[(static_cast<size_t>(y) * out.width + x) * 3 + c], px4x2(sx, sy, c))
        << "pixel (" << x << ", " << y << ") channel " << c << " should be source (" << sx << ", " << sy << ")";
}

// Encodes raw samples with libspng (the project's encode_png writes RGB only).
struct PngOptions {
  int bit_depth = 8;
  const spng_plte* plte = nullptr;
  const spng_trns* trns = nullptr;
};
std::vector<uint8_t> encode_raw(int w, int h, uint8_t color_type, const std::vector<uint8_t>& samples,
                                PngOptions opt = {}) {
  std::unique_ptr<spng_ctx, void (*)(spng_ctx*)> ctx(spng_ctx_new(SPNG_CTX_ENCODER), spng_ctx_free);
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(w);
  ihdr.height = static_cast<uint32_t>(h);
  ihdr.bit_depth = static_cast<uint8_t>(opt.bit_depth);
  ihdr.color_type = color_type;
  EXPECT_EQ(spng_set_ihdr(ctx.get(), &ihdr), 0);
  if (opt.plte) {
    EXPECT_EQ(spng_set_plte(ctx.get(), const_cast<spng_plte*>(opt.plte)), 0);
  }
  if (opt.trns) {
    EXPECT_EQ(spng_set_trns(ctx.get(), const_cast<spng_trns*>(opt.trns)), 0);
  }
  int err = spng_encode_image(ctx.get(), samples.data(), samples.size(), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  EXPECT_EQ(err, 0) << spng_strerror(err);
  size_t len = 0;
  void* buf = spng_get_png_buffer(ctx.get(), &len, &err);
  std::vector<uint8_t> out(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + len);
  std::free(buf);
  return out;
}

// PIL's convert('L'), written out independently of the library.
uint8_t pil_luma(int r, int g, int b) { return static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16); }

// OpenCV's Lanczos-4 at source position fx of a 1D row (edges replicated).
double lanczos4(const std::vector<double>& row, double fx) {
  const double pi = 3.14159265358979323846;
  int x0 = static_cast<int>(std::floor(fx));
  double sum = 0, wsum = 0;
  for (int k = -3; k <= 4; ++k) {
    double d = fx - (x0 + k);
    double w = std::abs(d) < 1e-12 ? 1.0 : 4 * std::sin(pi * d) * std::sin(pi * d / 4) / (pi * pi * d * d);
    int i = std::clamp(x0 + k, 0, static_cast<int>(row.size()) - 1);
    sum += w * row[i];
    wsum += w;
  }
  return sum / wsum;
}

}  // namespace

// ---------------------------------------------------------------- read_png_rgba

TEST(ReadPngRgba, RgbHasNoAlpha) {
  Rgb im = make_rgb(4, 2, px4x2);
  std::vector<uint8_t> png = encode_png(4, 2, im.px.data());
  PngRgba d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.width, 4);
  EXPECT_EQ(d.height, 2);
  EXPECT_EQ(d.channels, 3);
  EXPECT_FALSE(d.has_alpha);
  ASSERT_EQ(d.rgba.size(), 4u * 2 * 4);
  for (int i = 0; i < 8; ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(d.rgba[i * 4 + c], im.px[i * 3 + c]);
    EXPECT_EQ(d.rgba[i * 4 + 3], 255);
  }
}

TEST(ReadPngRgba, RgbaKeepsEveryByte) {
  std::vector<uint8_t> px = {1, 2, 3, 0, 4, 5, 6, 128, 7, 8, 9, 255, 250, 251, 252, 17};
  std::vector<uint8_t> png = encode_raw(2, 2, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, px);
  PngRgba d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 4);
  EXPECT_TRUE(d.has_alpha);
  EXPECT_EQ(d.rgba, px);
}

TEST(ReadPngRgba, GrayAndGrayAlpha) {
  std::vector<uint8_t> gray = {0, 77, 200};
  std::vector<uint8_t> png = encode_raw(3, 1, SPNG_COLOR_TYPE_GRAYSCALE, gray);
  PngRgba d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 1);
  EXPECT_FALSE(d.has_alpha);
  EXPECT_EQ(d.rgba, (std::vector<uint8_t>{0, 0, 0, 255, 77, 77, 77, 255, 200, 200, 200, 255}));

  std::vector<uint8_t> la = {10, 0, 20, 99, 30, 255};
  png = encode_raw(3, 1, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, la);
  d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 2);
  EXPECT_TRUE(d.has_alpha);
  EXPECT_EQ(d.rgba, (std::vector<uint8_t>{10, 10, 10, 0, 20, 20, 20, 99, 30, 30, 30, 255}));
}

TEST(ReadPngRgba, SixteenBitGrayKeepsTheHighByte) {
  // Samples are host-endian for SPNG_FMT_PNG: 0xABCD and 0x1200.
  uint16_t s[2] = {0xABCD, 0x1200};
  std::vector<uint8_t> bytes(reinterpret_cast<uint8_t*>(s), reinterpret_cast<uint8_t*>(s) + 4);
  std::vector<uint8_t> png = encode_raw(2, 1, SPNG_COLOR_TYPE_GRAYSCALE, bytes, {.bit_depth = 16});
  PngRgba d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.rgba[0], 0xAB);
  EXPECT_EQ(d.rgba[4], 0x12);
  EXPECT_EQ(d.rgba[7], 255);
}

TEST(ReadPngRgba, PaletteAndTrnsBecomeAlpha) {
  spng_plte plte{};
  plte.n_entries = 3;
  plte.entries[0] = {255, 0, 0, 0};
  plte.entries[1] = {0, 255, 0, 0};
  plte.entries[2] = {0, 0, 255, 0};
  std::vector<uint8_t> idx = {0, 1, 2, 1};
  std::vector<uint8_t> png = encode_raw(4, 1, SPNG_COLOR_TYPE_INDEXED, idx, {.plte = &plte});
  PngRgba d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 3);
  EXPECT_FALSE(d.has_alpha);
  EXPECT_EQ(d.rgba, (std::vector<uint8_t>{255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 0, 255, 0, 255}));

  spng_trns trns{};
  trns.n_type3_entries = 2;
  trns.type3_alpha[0] = 255;
  trns.type3_alpha[1] = 0;  // green is transparent; blue (no entry) is opaque
  png = encode_raw(4, 1, SPNG_COLOR_TYPE_INDEXED, idx, {.plte = &plte, .trns = &trns});
  d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 3);
  EXPECT_TRUE(d.has_alpha);
  EXPECT_EQ(d.rgba[3], 255);
  EXPECT_EQ(d.rgba[7], 0);
  EXPECT_EQ(d.rgba[11], 255);
  EXPECT_EQ(d.rgba[15], 0);

  // Gray with a transparent grey level (tRNS type 0).
  spng_trns gray_key{};
  gray_key.gray = 7;
  png = encode_raw(3, 1, SPNG_COLOR_TYPE_GRAYSCALE, {7, 8, 7}, {.trns = &gray_key});
  d = read_png_rgba(png.data(), png.size());
  EXPECT_EQ(d.channels, 1);
  EXPECT_TRUE(d.has_alpha);
  EXPECT_EQ(d.rgba, (std::vector<uint8_t>{7, 7, 7, 0, 8, 8, 8, 255, 7, 7, 7, 0}));
}

TEST(ReadPngRgba, MalformedAndOversizedAreIoErrors) {
  std::vector<uint8_t> garbage = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(error_of([&] { read_png_rgba(garbage.data(), garbage.size()); }).code(), ErrorCode::kIo);
  EXPECT_EQ(error_of([&] { read_png_rgba(nullptr, 0); }).code(), ErrorCode::kIo);
  Rgb im = make_rgb(4, 2, px4x2);
  std::vector<uint8_t> png = encode_png(4, 2, im.px.data());
  std::vector<uint8_t> truncated(png.begin(), png.begin() + static_cast<long>(png.size() / 2));
  EXPECT_EQ(error_of([&] { read_png_rgba(truncated.data(), truncated.size()); }).code(), ErrorCode::kIo);
  std::vector<uint8_t> wide = encode_raw(16385, 1, SPNG_COLOR_TYPE_GRAYSCALE, std::vector<uint8_t>(16385, 0));
  Error e = error_of([&] { read_png_rgba(wide.data(), wide.size()); });
  EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
}

// ---------------------------------------------------------------- resize

TEST(ResizeMode, NamesAndNumbers) {
  EXPECT_EQ(resize_mode_from_name("just-resize"), ResizeMode::kJustResize);
  EXPECT_EQ(resize_mode_from_name("crop"), ResizeMode::kCropAndResize);
  EXPECT_EQ(resize_mode_from_name("fill"), ResizeMode::kResizeAndFill);
  EXPECT_EQ(resize_mode_from_name("0"), ResizeMode::kJustResize);
  EXPECT_EQ(resize_mode_from_name("1"), ResizeMode::kCropAndResize);
  EXPECT_EQ(resize_mode_from_name("2"), ResizeMode::kResizeAndFill);
  for (ResizeMode m : {ResizeMode::kJustResize, ResizeMode::kCropAndResize, ResizeMode::kResizeAndFill})
    EXPECT_EQ(resize_mode_from_name(resize_mode_name(m)), m);
  EXPECT_INVALID(resize_mode_from_name("stretch"), "'stretch'");
  EXPECT_INVALID(resize_mode_from_name("3"), "just-resize, crop or fill");
}

TEST(Resize, SameSizeIsACopy) {
  Rgb im = make_rgb(4, 2, px4x2);
  for (ResizeMode m : {ResizeMode::kJustResize, ResizeMode::kCropAndResize, ResizeMode::kResizeAndFill}) {
    Rgb out = resize(im, 4, 2, m);
    EXPECT_EQ(out.px, im.px);
  }
}

TEST(Resize, JustResizeShrinksByAreaAverage) {
  // 4x2 -> 2x1: each output pixel is the mean of a 2x2 block.
  Rgb out = resize(make_rgb(4, 2, px4x2), 2, 1);
  ASSERT_EQ(out.width, 2);
  ASSERT_EQ(out.height, 1);
  EXPECT_EQ(out.px, (std::vector<uint8_t>{55, 51, 190, 75, 55, 190}));
}

TEST(Resize, EachAxisPicksItsOwnFilter) {
  // 4x2 -> 2x4: x shrinks (area: mean of column pairs), y grows (Lanczos of
  // a column that is constant stays constant).
  Rgb cols = make_rgb(4, 2, [](int x, int, int c) { return static_cast<uint8_t>(10 * x + 40 * c); });
  Rgb out = resize(cols, 2, 4);
  for (int y = 0; y < 4; ++y) {
    EXPECT_EQ(at(out, 0, y)[0], 5) << y;
    EXPECT_EQ(at(out, 1, y)[0], 25) << y;
    EXPECT_EQ(at(out, 1, y)[2], 105) << y;
  }
  // 4x2 -> 8x1: y shrinks (mean of the two rows), x grows.
  Rgb rows = make_rgb(4, 2, [](int, int y, int) { return static_cast<uint8_t>(y ? 200 : 100); });
  out = resize(rows, 8, 1);
  for (int x = 0; x < 8; ++x) EXPECT_EQ(at(out, x, 0)[0], 150) << x;
}

TEST(Resize, EnlargingIsLanczos4) {
  // A step 0 0 255 255 enlarged 2x: OpenCV maps output x to source
  // (x + 0.5) / 2 - 0.5 and applies the 8-tap Lanczos window.
  Gray g = make_gray(4, 1);
  g.px = {0, 0, 255, 255};
  Gray out = resize(g, 8, 1);
  std::vector<double> row = {0, 0, 255, 255};
  for (int x = 0; x < 8; ++x) {
    double want = std::clamp(lanczos4(row, (x + 0.5) / 2 - 0.5), 0.0, 255.0);
    EXPECT_NEAR(out.px[x], want, 1.0) << "x " << x;
    EXPECT_NEAR(out.px[x] + out.px[7 - x], 255, 1) << "the step is antisymmetric";
  }
  // Bilinear would give 64 at x = 3 (source 1.25); Lanczos-4 gives 56.
  EXPECT_GE(out.px[3], 54);
  EXPECT_LE(out.px[3], 58);
  Rgb flat = resize(uniform_rgb(3, 2, 9, 99, 199), 17, 11);
  ASSERT_EQ(flat.px.size(), 17u * 11 * 3);
  for (size_t i = 0; i < flat.px.size(); i += 3) ASSERT_EQ(flat.px[i + 1], 99);
}

TEST(Resize, CropTakesTheCentre) {
  // 4x2 -> 2x2: scaled size 4x2 (no scaling), pasted at x = 2/2 - 4/2 = -1:
  // columns 1 and 2.
  Rgb out = resize(make_rgb(4, 2, px4x2), 2, 2, ResizeMode::kCropAndResize);
  ASSERT_EQ(out.width, 2);
  ASSERT_EQ(out.height, 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x) expect_source_pixel(out, x, y, x + 1, y);
  // 4x2 -> 3x2: pasted at 3/2 - 4/2 = -1 again: columns 1..3.
  out = resize(make_rgb(4, 2, px4x2), 3, 2, ResizeMode::kCropAndResize);
  for (int x = 0; x < 3; ++x) expect_source_pixel(out, x, 0, x + 1, 0);
  // Enlarging and cropping a flat image stays flat.
  Rgb flat = resize(uniform_rgb(4, 2, 1, 2, 3), 5, 5, ResizeMode::kCropAndResize);
  ASSERT_EQ(flat.width, 5);
  for (size_t i = 0; i < flat.px.size(); i += 3) ASSERT_EQ(flat.px[i + 2], 3);
}

TEST(Resize, CropOfAnExtremeAspectSamplesTheWindowDirectly) {
  // 1x10000 to 100x100 would scale to 100x1000000; the window seen is source
  // rows 4999.5 .. 5000.5, across a step from 0 to 255 at row 5000.
  Gray tall = make_gray(1, 10000);
  for (int y = 5000; y < 10000; ++y) tall.px[y] = 255;
  Gray out = resize(tall, 100, 100, ResizeMode::kCropAndResize);
  ASSERT_EQ(out.width, 100);
  ASSERT_EQ(out.height, 100);
  EXPECT_LT(at(out, 0, 0), 10);
  EXPECT_GT(at(out, 0, 99), 245);
  EXPECT_GT(at(out, 0, 50), 60);
  EXPECT_LT(at(out, 0, 49), 195);
  // Every column is the same up to the warp's fixed-point rounding.
  for (int y = 0; y < 100; ++y)
    for (int x = 1; x < 100; ++x) ASSERT_NEAR(at(out, x, y), at(out, 0, y), 1) << x << "," << y;
}

TEST(Resize, FillStretchesTheEdgeRows) {
  // 4x2 -> 4x4: fits at 4x2, top = 4/2 - 2/2 = 1: rows 0 0 1 1.
  Rgb out = resize(make_rgb(4, 2, px4x2), 4, 4, ResizeMode::kResizeAndFill);
  ASSERT_EQ(out.height, 4);
  const int rows4[] = {0, 0, 1, 1};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) expect_source_pixel(out, x, y, x, rows4[y]);
  // 4x2 -> 4x5: top 1, bottom 2 (A1111 leaves the last row black here).
  out = resize(make_rgb(4, 2, px4x2), 4, 5, ResizeMode::kResizeAndFill);
  const int rows5[] = {0, 0, 1, 1, 1};
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 4; ++x) expect_source_pixel(out, x, y, x, rows5[y]);
}

TEST(Resize, FillStretchesTheEdgeColumns) {
  // 4x2 -> 8x2: left = 8/2 - 4/2 = 2: columns 0 0 0 1 2 3 3 3.
  Rgb out = resize(make_rgb(4, 2, px4x2), 8, 2, ResizeMode::kResizeAndFill);
  const int cols8[] = {0, 0, 0, 1, 2, 3, 3, 3};
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 8; ++x) expect_source_pixel(out, x, y, cols8[x], y);
  // 4x2 -> 7x2: left = 3 - 2 = 1, right 2.
  out = resize(make_rgb(4, 2, px4x2), 7, 2, ResizeMode::kResizeAndFill);
  const int cols7[] = {0, 0, 1, 2, 3, 3, 3};
  for (int x = 0; x < 7; ++x) expect_source_pixel(out, x, 1, cols7[x], 1);
  // Gray takes the same path: 2x1 -> 2x3.
  Gray g = make_gray(2, 1);
  g.px = {10, 20};
  Gray gout = resize(g, 2, 3, ResizeMode::kResizeAndFill);
  EXPECT_EQ(gout.px, (std::vector<uint8_t>{10, 20, 10, 20, 10, 20}));
  // An extreme aspect still fits at least one row.
  Gray thin = resize(make_gray(1000, 1, 7), 8, 8, ResizeMode::kResizeAndFill);
  EXPECT_EQ(thin.px, std::vector<uint8_t>(64, 7));
}

TEST(Resize, RefusesBadSizes) {
  Rgb im = make_rgb(4, 2, px4x2);
  EXPECT_INVALID(resize(im, 0, 8), "0x8");
  EXPECT_INVALID(resize(im, 8, 16385), "1-16384");
  Rgb broken = im;
  broken.px.pop_back();
  EXPECT_INVALID(resize(broken, 8, 8), "needs 24 bytes, got 23");
  EXPECT_INVALID(resize(Rgb{}, 8, 8), "0x0");
  EXPECT_INVALID(resize(im, 8, 8, static_cast<ResizeMode>(7)), "resize mode 7");
}

// ---------------------------------------------------------------- masks

TEST(DecodeMask, RgbUsesPilLuma) {
  // red, green, blue, a mix, white, black
  std::vector<uint8_t> rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30, 255, 255, 255, 0, 0, 0};
  std::vector<uint8_t> png = encode_png(6, 1, rgb.data());
  Gray m = decode_mask(png.data(), png.size(), MaskConvention::kLuminance);
  // (19595 R + 38470 G + 7471 B + 32768) >> 16, by hand.
  EXPECT_EQ(m.px, (std::vector<uint8_t>{76, 150, 29, 124, 255, 0}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(m.px[i], pil_luma(rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2]));
}

TEST(DecodeMask, LumaOfEveryGreyIsItself) {
  std::vector<uint8_t> rgb;
  for (int v = 0; v < 256; ++v) rgb.insert(rgb.end(), {uint8_t(v), uint8_t(v), uint8_t(v)});
  std::vector<uint8_t> png = encode_png(256, 1, rgb.data());
  Gray m = decode_mask(png.data(), png.size(), MaskConvention::kLuminance);
  for (int v = 0; v < 256; ++v) ASSERT_EQ(m.px[v], v);
  std::vector<uint8_t> gray_png = encode_raw(3, 1, SPNG_COLOR_TYPE_GRAYSCALE, {0, 128, 255});
  EXPECT_EQ(decode_mask(gray_png.data(), gray_png.size(), MaskConvention::kLuminance).px,
            (std::vector<uint8_t>{0, 128, 255}));
}

TEST(DecodeMask, RgbaWithTransparencyUsesAlpha) {
  // Red opaque, green transparent, blue half: the alpha is the mask (A1111
  // create_binary_mask: opaque strokes are repainted), not the luma.
  std::vector<uint8_t> rgba = {255, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 128};
  std::vector<uint8_t> png = encode_raw(3, 1, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, rgba);
  EXPECT_EQ(decode_mask(png.data(), png.size(), MaskConvention::kLuminance).px, (std::vector<uint8_t>{255, 0, 128}));
  // Fully opaque RGBA: luma.
  std::vector<uint8_t> opaque = {255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255};
  png = encode_raw(3, 1, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, opaque);
  EXPECT_EQ(decode_mask(png.data(), png.size(), MaskConvention::kLuminance).px, (std::vector<uint8_t>{76, 150, 29}));
  // Gray + alpha follows the same rule.
  png = encode_raw(2, 1, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, {200, 0, 200, 255});
  EXPECT_EQ(decode_mask(png.data(), png.size(), MaskConvention::kLuminance).px, (std::vector<uint8_t>{0, 255}));
  png = encode_raw(2, 1, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, {200, 255, 10, 255});
  EXPECT_EQ(decode_mask(png.data(), png.size(), MaskConvention::kLuminance).px, (std::vector<uint8_t>{200, 10}));
}

TEST(DecodeMask, OpenAiTransparentIsEdit) {
  std::vector<uint8_t> rgba = {0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 255, 9, 9, 9, 254};
  std::vector<uint8_t> png = encode_raw(4, 1, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, rgba);
  EXPECT_EQ(decode_mask(png.data(), png.size(), MaskConvention::kTransparentIsEdit).px,
            (std::vector<uint8_t>{255, 127, 0, 1}));
  // No alpha at all, or alpha that is everywhere 255: refused.
  Rgb im = make_rgb(4, 2, px4x2);
  std::vector<uint8_t> rgb_png = encode_png(4, 2, im.px.data());
  EXPECT_INVALID(decode_mask(rgb_png.data(), rgb_png.size(), MaskConvention::kTransparentIsEdit),
                 "the mask has no transparent pixels");
  std::vector<uint8_t> opaque = encode_raw(1, 1, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, {1, 2, 3, 255});
  EXPECT_INVALID(decode_mask(opaque.data(), opaque.size(), MaskConvention::kTransparentIsEdit),
                 "the mask has no transparent pixels");
}

TEST(DecodeMask, UndecodableIsAnIoError) {
  std::vector<uint8_t> junk(100, 0x42);
  EXPECT_EQ(error_of([&] { decode_mask(junk.data(), junk.size(), MaskConvention::kLuminance); }).code(), ErrorCode::kIo);
  EXPECT_EQ(error_of([&] { decode_mask(junk.data(), junk.size(), MaskConvention::kTransparentIsEdit); }).code(),
            ErrorCode::kIo);
  EXPECT_EQ(error_of([&] { alpha_edit_mask(junk.data(), junk.size()); }).code(), ErrorCode::kIo);
}

TEST(AlphaEditMask, TransparentPixelsAreEdited) {
  std::vector<uint8_t> rgba = {0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 255, 0, 0, 0, 254};
  std::vector<uint8_t> png = encode_raw(2, 2, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, rgba);
  std::optional<Gray> m = alpha_edit_mask(png.data(), png.size());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->width, 2);
  EXPECT_EQ(m->height, 2);
  EXPECT_EQ(m->px, (std::vector<uint8_t>{255, 255, 0, 255}));
  Rgb im = make_rgb(4, 2, px4x2);
  std::vector<uint8_t> rgb_png = encode_png(4, 2, im.px.data());
  EXPECT_FALSE(alpha_edit_mask(rgb_png.data(), rgb_png.size()).has_value());
  std::vector<uint8_t> opaque = encode_raw(1, 1, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, {1, 2, 3, 255});
  EXPECT_FALSE(alpha_edit_mask(opaque.data(), opaque.size()).has_value());
}

TEST(Mask, InvertBinarizeBoundingBox) {
  Gray m = make_gray(4, 1);
  m.px = {0, 127, 128, 255};
  EXPECT_EQ(invert(m).px, (std::vector<uint8_t>{255, 128, 127, 0}));
  EXPECT_EQ(binarize(m).px, (std::vector<uint8_t>{0, 0, 255, 255}));

  Gray b = make_gray(10, 8);
  EXPECT_TRUE(all_zero(b));
  EXPECT_FALSE(bounding_box(b).has_value());
  set(b, 3, 2, 1);
  set(b, 5, 4, 200);
  EXPECT_FALSE(all_zero(b));
  EXPECT_EQ(bounding_box(b), (Rect{3, 2, 3, 3}));
  Gray broken = b;
  broken.width = 11;
  EXPECT_INVALID(invert(broken), "needs 88 bytes, got 80");
}

TEST(Blur, ZeroIsACopyAndRangeIsChecked) {
  Gray m = make_gray(5, 5);
  set(m, 2, 2, 255);
  EXPECT_EQ(blur(m, 0).px, m.px);
  EXPECT_INVALID(blur(m, -1), "radius -1");
  EXPECT_INVALID(blur(m, 257), "0-256");
}

TEST(Blur, KernelSizeFollowsA1111) {
  // radius 2: kernel 2 * int(5.5) + 1 = 11 taps, so a vertical line spreads
  // exactly 5 pixels each way; sigma 2 puts 255 * 0.2006 = 51 at the centre.
  Gray vline = make_gray(41, 9);
  for (int y = 0; y < 9; ++y) set(vline, 20, y, 255);
  const Gray vout = blur(vline, 2);
  Gray out = vout;
  EXPECT_NEAR(at(out, 20, 4), 51, 1);
  for (int d = 1; d <= 5; ++d) {
    EXPECT_GT(at(out, 20 + d, 4), 0) << d;
    EXPECT_EQ(at(out, 20 + d, 4), at(out, 20 - d, 4)) << d;
    EXPECT_LT(at(out, 20 + d, 4), at(out, 20 + d - 1, 4)) << d;
  }
  EXPECT_EQ(at(out, 26, 4), 0);
  EXPECT_EQ(at(out, 14, 4), 0);
  // The y pass is the same kernel: a horizontal line.
  Gray hline = make_gray(9, 41);
  for (int x = 0; x < 9; ++x) set(hline, x, 20, 255);
  out = blur(hline, 2);
  for (int d = 0; d <= 6; ++d) EXPECT_EQ(at(out, 4, 20 + d), at(vout, 20 + d, 4)) << d;
  // radius 4: 2 * int(10.5) + 1 = 21 taps, reach 10.
  out = blur(vline, 4);
  EXPECT_GT(at(out, 30, 4), 0);
  EXPECT_EQ(at(out, 31, 4), 0);
}

TEST(Blur, SinglePixelKeepsItsMassAndIsSymmetric) {
  Gray m = make_gray(41, 41);
  set(m, 20, 20, 255);
  Gray out = blur(m, 3);
  int sum = 0;
  for (uint8_t v : out.px) sum += v;
  EXPECT_NEAR(sum, 255, 12);
  for (int dy = -8; dy <= 8; ++dy)
    for (int dx = -8; dx <= 8; ++dx) {
      uint8_t v = at(out, 20 + dx, 20 + dy);
      ASSERT_EQ(v, at(out, 20 - dx, 20 + dy));
      ASSERT_EQ(v, at(out, 20 + dx, 20 - dy));
      ASSERT_EQ(v, at(out, 20 + dy, 20 + dx));  // same kernel in x and y
    }
  EXPECT_GT(at(out, 20, 20), at(out, 21, 20));
  // Tiny masks and kernels wider than the image do not fail.
  Gray tiny = make_gray(1, 2, 255);
  EXPECT_EQ(blur(tiny, 10).px, tiny.px);
}

// ---------------------------------------------------------------- crop region

TEST(MaskedCropRegion, GrowsTheShortSide) {
  // 100x80, mask x 40..49, y 30..35, padding 4: (36, 26)-(54, 40), 18x14.
  // 18/14 > 512/512: desired height 18, diff 4: y 24..42.
  Gray m = make_gray(100, 80);
  fill_rect(m, 40, 30, 50, 36, 255);
  EXPECT_EQ(masked_crop_region(m, 4, 512, 512), (Rect{36, 24, 18, 18}));
  // Mask 5x20 at (20, 10), square target: desired width 20, diff 15,
  // x1 -= 7, x2 += 8.
  Gray n = make_gray(100, 80);
  fill_rect(n, 20, 10, 25, 30, 255);
  EXPECT_EQ(masked_crop_region(n, 0, 512, 512), (Rect{13, 10, 20, 20}));
  // A soft pixel (value 1) counts.
  Gray s = make_gray(100, 80);
  fill_rect(s, 20, 10, 25, 30, 1);
  EXPECT_EQ(masked_crop_region(s, 0, 512, 512), (Rect{13, 10, 20, 20}));
}

TEST(MaskedCropRegion, ShiftsBackInsideTheImage) {
  // Top-left corner: (0,0)-(10,4), diff 6: y -3..7, shifted to 0..10.
  Gray m = make_gray(100, 80);
  fill_rect(m, 0, 0, 10, 4, 255);
  EXPECT_EQ(masked_crop_region(m, 0, 512, 512), (Rect{0, 0, 10, 10}));
  // Padding is clipped first: (0,0)-(12,6), diff 6: y -3..9 -> 0..12.
  EXPECT_EQ(masked_crop_region(m, 2, 512, 512), (Rect{0, 0, 12, 12}));
  // Bottom: (50,76)-(60,80): y 73..83, shifted up by 3: 70..80.
  Gray b = make_gray(100, 80);
  fill_rect(b, 50, 76, 60, 80, 255);
  EXPECT_EQ(masked_crop_region(b, 0, 512, 512), (Rect{50, 70, 10, 10}));
  // Right edge, 768x512 target: (95,0)-(100,40), desired width 60, diff 55:
  // x 68..128, shifted left by 28: 40..100.
  Gray r = make_gray(100, 80);
  fill_rect(r, 95, 0, 100, 40, 255);
  EXPECT_EQ(masked_crop_region(r, 0, 768, 512), (Rect{40, 0, 60, 40}));
}

TEST(MaskedCropRegion, LargerThanTheImageTakesTheWholeAxis) {
  // 100x20, mask (10,5)-(90,15), 512x768: desired height 120: y -50..70,
  // shifted to -100..20, then to 0..120, clipped to 0..20.
  Gray m = make_gray(100, 20);
  fill_rect(m, 10, 5, 90, 15, 255);
  EXPECT_EQ(masked_crop_region(m, 0, 512, 768), (Rect{10, 0, 80, 20}));
}

TEST(MaskedCropRegion, FractionalSizesTruncateLikePython) {
  // 10x7 region, 512x768: desired height 10 / (2/3) = 15.000000000000002,
  // int(8.000000000000002) = 8: y 46..61.
  Gray m = make_gray(200, 200);
  fill_rect(m, 50, 50, 60, 57, 255);
  EXPECT_EQ(masked_crop_region(m, 0, 512, 768), (Rect{50, 46, 10, 15}));
  // 10x10, 640x448: desired width 14.2857..., diff int(4.2857) = 4: x 48..62.
  Gray n = make_gray(200, 200);
  fill_rect(n, 50, 50, 60, 60, 255);
  EXPECT_EQ(masked_crop_region(n, 0, 640, 448), (Rect{48, 50, 14, 10}));
}

TEST(MaskedCropRegion, RefusesBadInput) {
  Gray m = make_gray(100, 80);
  EXPECT_INVALID(masked_crop_region(m, 0, 512, 512), "all zero");
  set(m, 5, 5, 255);
  EXPECT_INVALID(masked_crop_region(m, -1, 512, 512), "padding -1");
  EXPECT_INVALID(masked_crop_region(m, 0, 0, 512), "0x512");
}

// ---------------------------------------------------------------- crop, paste, composite

TEST(CropPaste, CopiesExactlyAndChecksTheRect) {
  Rgb im = make_rgb(4, 2, px4x2);
  Rgb c = crop(im, Rect{1, 0, 2, 2});
  ASSERT_EQ(c.width, 2);
  ASSERT_EQ(c.height, 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x) expect_source_pixel(c, x, y, x + 1, y);
  EXPECT_INVALID(crop(im, Rect{3, 0, 2, 2}), "inside the 4x2 image");
  EXPECT_INVALID(crop(im, Rect{-1, 0, 2, 2}), "x -1");
  EXPECT_INVALID(crop(im, Rect{0, 0, 0, 2}), "non-empty");
  Gray g = make_gray(3, 3);
  g.px = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(crop(g, Rect{1, 1, 2, 2}).px, (std::vector<uint8_t>{5, 6, 8, 9}));

  Rgb dst = uniform_rgb(6, 5, 0, 0, 0);
  Rgb out = paste(dst, im, Rect{1, 2, 4, 2});
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 6; ++x) {
      if (x >= 1 && x < 5 && y >= 2 && y < 4) {
        expect_source_pixel(out, x, y, x - 1, y - 2);
      } else {
        EXPECT_EQ(at(out, x, y)[0] + at(out, x, y)[1] + at(out, x, y)[2], 0) << x << "," << y;
      }
    }
  // The pasted image is resized to the rect.
  out = paste(dst, uniform_rgb(1, 1, 7, 8, 9), Rect{0, 0, 3, 2});
  EXPECT_EQ(at(out, 2, 1)[2], 9);
  EXPECT_EQ(at(out, 3, 1)[2], 0);
  EXPECT_INVALID(paste(dst, im, Rect{4, 0, 4, 2}), "inside the 6x5 image");
}

TEST(Composite, BlendsLinearlyWithRounding) {
  Rgb orig = uniform_rgb(4, 1, 100, 0, 255);
  Rgb gen = uniform_rgb(4, 1, 200, 255, 0);
  Gray m = make_gray(4, 1);
  m.px = {0, 255, 128, 1};
  Rgb out = composite(orig, gen, m);
  // m 0: original; 255: generated; 128: (100*127 + 200*128)/255 = 150.2,
  // (255*128)/255 = 128, (255*127)/255 = 127; m 1: 100.39, 1, 254.
  EXPECT_EQ(out.px, (std::vector<uint8_t>{100, 0, 255, 200, 255, 0, 150, 128, 127, 100, 1, 254}));
  // Rounded, not truncated: 1 * 128 / 255 = 0.502 -> 1; 3 * 42 / 255 = 0.494 -> 0.
  Gray h = make_gray(1, 1, 128);
  EXPECT_EQ(composite(uniform_rgb(1, 1, 0, 0, 0), uniform_rgb(1, 1, 1, 3, 255), h).px,
            (std::vector<uint8_t>{1, 2, 128}));
  h.px[0] = 42;
  EXPECT_EQ(composite(uniform_rgb(1, 1, 0, 0, 0), uniform_rgb(1, 1, 3, 7, 255), h).px,
            (std::vector<uint8_t>{0, 1, 42}));
  EXPECT_INVALID(composite(orig, uniform_rgb(4, 2, 0, 0, 0), m), "generated image is 4x2");
  EXPECT_INVALID(composite(orig, gen, make_gray(2, 2)), "the mask is 2x2");
}

// ---------------------------------------------------------------- fill

TEST(FillMasked, UniformSurroundingFillsTheHole) {
  Rgb im = uniform_rgb(32, 32, 200, 100, 50);
  Gray m = make_gray(32, 32);
  fill_rect(m, 12, 12, 20, 20, 255);
  std::mt19937 rng(1);
  for (int y = 12; y < 20; ++y)
    for (int x = 12; x < 20; ++x)
      for (int c = 0; c < 3; ++c) im.px[(y * 32 + x) * 3 + c] = static_cast<uint8_t>(rng());
  Rgb out = fill_masked(im, m);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const uint8_t* p = at(out, x, y);
      if (at(m, x, y) == 0) {
        for (int c = 0; c < 3; ++c) ASSERT_EQ(p[c], at(im, x, y)[c]) << "unmasked pixel changed";
      } else {
        ASSERT_NEAR(p[0], 200, 1);
        ASSERT_NEAR(p[1], 100, 1);
        ASSERT_NEAR(p[2], 50, 1);
      }
    }
}

TEST(FillMasked, ColoursComeFromTheNearestSide) {
  // Red left half, blue right half, a hole across the boundary.
  Rgb im = make_rgb(32, 32, [](int x, int, int c) { return static_cast<uint8_t>(x < 16 ? (c == 0) * 255 : (c == 2) * 255); });
  Rgb keep = im;
  Gray m = make_gray(32, 32);
  fill_rect(m, 10, 10, 22, 22, 255);
  Rgb out = fill_masked(im, m);
  EXPECT_GT(at(out, 10, 16)[0], 200);
  EXPECT_LT(at(out, 10, 16)[2], 55);
  EXPECT_GT(at(out, 21, 16)[2], 200);
  EXPECT_LT(at(out, 21, 16)[0], 55);
  for (size_t i = 0; i < m.px.size(); ++i) {
    if (m.px[i]) continue;
    for (int c = 0; c < 3; ++c) ASSERT_EQ(out.px[i * 3 + c], keep.px[i * 3 + c]);
  }
}

TEST(FillMasked, LargeHolesUseTheWideBlurs) {
  // A hole 1100 pixels wide in green: its middle is 550 pixels from any
  // unmasked pixel, reached only by the radius-256 layer.
  Rgb im = uniform_rgb(1200, 8, 0, 180, 0);
  Gray m = make_gray(1200, 8);
  fill_rect(m, 50, 0, 1150, 8, 255);
  for (int y = 0; y < 8; ++y)
    for (int x = 50; x < 1150; ++x) im.px[(y * 1200 + x) * 3] = 255;  // red junk in the hole
  Rgb out = fill_masked(im, m);
  for (int x = 0; x < 1200; x += 25) {
    EXPECT_NEAR(at(out, x, 3)[0], 0, 1) << x;
    EXPECT_NEAR(at(out, x, 3)[1], 180, 1) << x;
  }
  // Nothing to spread from: black, as A1111.
  Rgb all = fill_masked(uniform_rgb(4, 4, 9, 9, 9), make_gray(4, 4, 255));
  EXPECT_EQ(all.px, std::vector<uint8_t>(48, 0));
  EXPECT_INVALID(fill_masked(im, make_gray(8, 8)), "the image is 1200x8");
}

// ---------------------------------------------------------------- outpainting

TEST(ParseOutpaint, AcceptsSidesAndAll) {
  OutpaintSpec s = parse_outpaint("left=128,right=64,top=0,bottom=32");
  EXPECT_EQ(s.left, 128);
  EXPECT_EQ(s.right, 64);
  EXPECT_EQ(s.top, 0);
  EXPECT_EQ(s.bottom, 32);
  EXPECT_TRUE(s.any());
  s = parse_outpaint("all=64");
  EXPECT_EQ(s.left + s.right + s.top + s.bottom, 256);
  s = parse_outpaint(" bottom = 8 , top=16");
  EXPECT_EQ(s.left, 0);
  EXPECT_EQ(s.right, 0);
  EXPECT_EQ(s.top, 16);
  EXPECT_EQ(s.bottom, 8);
  EXPECT_FALSE(parse_outpaint("left=0").any());
  EXPECT_EQ(parse_outpaint("right=16384").right, 16384);
}

TEST(ParseOutpaint, NamesTheBadPart) {
  EXPECT_INVALID(parse_outpaint(""), "key=pixels");
  EXPECT_INVALID(parse_outpaint("left"), "part 'left'");
  EXPECT_INVALID(parse_outpaint("left=8,"), "part ''");
  EXPECT_INVALID(parse_outpaint("up=5"), "unknown side 'up'");
  EXPECT_INVALID(parse_outpaint("left=1,left=2"), "'left' is given twice");
  EXPECT_INVALID(parse_outpaint("left=-1"), "left='-1'");
  EXPECT_INVALID(parse_outpaint("top=abc"), "top='abc'");
  EXPECT_INVALID(parse_outpaint("top="), "top=''");
  EXPECT_INVALID(parse_outpaint("top=1.5"), "0-16384");
  EXPECT_INVALID(parse_outpaint("top=16385"), "0-16384");
  EXPECT_INVALID(parse_outpaint("top=99999999999999"), "0-16384");
  EXPECT_INVALID(parse_outpaint("all=8,left=2"), "'all' cannot be combined");
}

TEST(OutpaintCanvas, SizesRoundUpToEightOnTheRightAndBottom) {
  Rgb im = make_rgb(100, 60, [](int x, int y, int c) { return static_cast<uint8_t>(x * 2 + y * 3 + c * 50); });
  OutpaintSpec spec;
  spec.left = 10;
  spec.bottom = 5;
  OutpaintCanvas c = outpaint_canvas(im, spec, 1);
  // 100 + 10 = 110 -> 112 (2 more on the right); 60 + 5 = 65 -> 72.
  EXPECT_EQ(c.image.width, 112);
  EXPECT_EQ(c.image.height, 72);
  EXPECT_EQ(c.mask.width, 112);
  EXPECT_EQ(c.mask.height, 72);
  EXPECT_EQ(c.original, (Rect{10, 0, 100, 60}));
  EXPECT_EQ(crop(c.image, c.original).px, im.px);
  // Edge fill: the nearest edge pixel of the original.
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_EQ(at(c.image, 0, 30)[ch], at(im, 0, 30)[ch]);
    EXPECT_EQ(at(c.image, 5, 0)[ch], at(im, 0, 0)[ch]);
    EXPECT_EQ(at(c.image, 111, 71)[ch], at(im, 99, 59)[ch]);
    EXPECT_EQ(at(c.image, 50, 70)[ch], at(im, 40, 59)[ch]);
  }
  OutpaintSpec all;
  all.left = all.right = all.top = all.bottom = 8;
  OutpaintCanvas d = outpaint_canvas(make_rgb(96, 64, [](int, int, int) { return uint8_t(1); }), all, 0);
  EXPECT_EQ(d.image.width, 112);
  EXPECT_EQ(d.image.height, 80);
  EXPECT_EQ(d.original, (Rect{8, 8, 96, 64}));
}

TEST(OutpaintCanvas, MaskCoversNewAreaAndSeamOnly) {
  Rgb im = uniform_rgb(100, 60, 10, 20, 30);
  OutpaintSpec spec;  // seam 16, feather 8
  spec.left = 10;
  spec.bottom = 5;
  OutpaintCanvas c = outpaint_canvas(im, spec, 1);
  const Rect& o = c.original;
  // Sides that grew: left (10), right (2, from rounding), bottom (12).
  for (int y = 0; y < c.mask.height; ++y)
    for (int x = 0; x < c.mask.width; ++x) {
      const int ix = x - o.x, iy = y - o.y;
      const bool inside = ix >= 0 && ix < o.width && iy >= 0 && iy < o.height;
      const bool band = ix < 16 || ix >= o.width - 16 || iy >= o.height - 16;
      if (!inside) {
        ASSERT_EQ(at(c.mask, x, y), 255) << "new area (" << x << ", " << y << ")";
      } else if (!band) {
        ASSERT_EQ(at(c.mask, x, y), 0) << "beyond the seam (" << x << ", " << y << ")";
      }
    }
  EXPECT_EQ(at(c.mask, 50, 20), 0);
  // Across the left seam the mask ramps from near 255 at the old edge down
  // towards 0 at the band's inner side (no step for the overlay to show).
  EXPECT_GT(at(c.mask, 10, 20), 200);
  EXPECT_GT(at(c.mask, 10 + 15, 20), 0);
  EXPECT_LT(at(c.mask, 10 + 15, 20), 80);
  for (int ix = 1; ix < 16; ++ix) EXPECT_LE(at(c.mask, 10 + ix, 20), at(c.mask, 10 + ix - 1, 20)) << ix;
  EXPECT_EQ(at(c.mask, 10 + 16, 20), 0);

  // No seam, no feather: exactly the new area.
  spec.seam = 0;
  spec.feather = 0;
  c = outpaint_canvas(im, spec, 1);
  for (int y = 0; y < c.mask.height; ++y)
    for (int x = 0; x < c.mask.width; ++x) {
      const bool inside = x >= 10 && x < 110 && y < 60;
      ASSERT_EQ(at(c.mask, x, y), inside ? 0 : 255) << x << "," << y;
    }
  // A seam wider than the image repaints all of it (every pixel >= 128, the
  // binarisation threshold).
  spec.seam = 500;
  c = outpaint_canvas(im, spec, 1);
  for (uint8_t v : c.mask.px) ASSERT_GE(v, 128);
}

TEST(OutpaintCanvas, NoiseIsSeededAndDocumented) {
  Rgb im = uniform_rgb(16, 16, 128, 128, 128);
  OutpaintSpec spec;
  spec.top = 8;
  spec.fill = OutpaintSpec::Fill::kNoise;
  OutpaintCanvas a = outpaint_canvas(im, spec, 42), b = outpaint_canvas(im, spec, 42), c = outpaint_canvas(im, spec, 43);
  EXPECT_EQ(a.image.px, b.image.px);
  EXPECT_NE(a.image.px, c.image.px);
  EXPECT_EQ(crop(a.image, a.original).px, im.px);
  // Bytes of successive mt19937_64 outputs, low byte first, row-major, R G B.
  std::mt19937_64 rng(42);
  uint64_t w0 = rng(), w1 = rng();
  const uint8_t* p0 = at(a.image, 0, 0);
  const uint8_t* p2 = at(a.image, 2, 0);
  EXPECT_EQ(p0[0], w0 & 0xff);
  EXPECT_EQ(p0[1], (w0 >> 8) & 0xff);
  EXPECT_EQ(p0[2], (w0 >> 16) & 0xff);
  EXPECT_EQ(p2[0], (w0 >> 48) & 0xff);
  EXPECT_EQ(p2[1], (w0 >> 56) & 0xff);
  EXPECT_EQ(p2[2], w1 & 0xff);
  // Noise spans the byte range.
  int lo = 255, hi = 0;
  for (int i = 0; i < 16 * 8 * 3; ++i) {
    lo = std::min<int>(lo, a.image.px[i]);
    hi = std::max<int>(hi, a.image.px[i]);
  }
  EXPECT_LT(lo, 16);
  EXPECT_GT(hi, 239);
}

TEST(OutpaintCanvas, RefusesBadSpecs) {
  Rgb im = uniform_rgb(100, 60, 1, 2, 3);
  OutpaintSpec none;
  EXPECT_INVALID(outpaint_canvas(im, none, 0), "nothing to outpaint");
  OutpaintSpec neg;
  neg.left = -1;
  neg.right = 8;
  EXPECT_INVALID(outpaint_canvas(im, neg, 0), "left = -1");
  OutpaintSpec huge;
  huge.left = 16384;
  EXPECT_INVALID(outpaint_canvas(im, huge, 0), "16488x64");
  OutpaintSpec feather;
  feather.top = 8;
  feather.feather = 300;
  EXPECT_INVALID(outpaint_canvas(im, feather, 0), "feather 300");
  OutpaintSpec seam;
  seam.top = 8;
  seam.seam = -2;
  EXPECT_INVALID(outpaint_canvas(im, seam, 0), "seam -2");
}
