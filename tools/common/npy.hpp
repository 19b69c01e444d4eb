/// @file npy.hpp
/// @brief Reading and writing NumPy .npy files of Q, K, V and outputs: [tokens][heads][head_dim],
/// little-endian, C order; fp32, fp16 and bf16 elements.
///
/// bf16 convention. NumPy has no bfloat16, so:
/// - written bf16 arrays carry the descr '<V2' (2-byte void), which is what `np.save` writes for
///   an `ml_dtypes.bfloat16` array; load them with `np.load(f).view(ml_dtypes.bfloat16)`, or
///   `torch.from_numpy(np.load(f).view(np.int16)).view(torch.bfloat16)`;
/// - on reading, '<V2' / '|V2' and 2-byte integers ('<u2', '<i2', '|u2'...) are bf16 bit
///   patterns (the usual way to export a torch bf16 tensor: `t.view(torch.int16).numpy()`).
/// '<f2' is IEEE half, '<f4' float; '<f8' is read (and narrowed to float) for convenience.
/// Big-endian data, Fortran order, object arrays and truncated files are rejected with a
/// compact::Error naming the file and what was expected.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"

namespace compact::tools {

/// Element types an .npy file may hold here.
enum class NpyType : std::uint8_t { f32, f16, bf16, f64 };

constexpr const char* to_string(NpyType t) {
  switch (t) {
    case NpyType::f32:
      return "fp32";
    case NpyType::f16:
      return "fp16";
    case NpyType::bf16:
      return "bf16";
    default:
      return "fp64";
  }
}
constexpr std::size_t size_of(NpyType t) {
  return t == NpyType::f32 ? 4 : (t == NpyType::f64 ? 8 : 2);
}
/// The .npy element type of an attention dtype.
constexpr NpyType npy_type_of(DType t) {
  return t == DType::bf16 ? NpyType::bf16 : NpyType::f16;
}

/// An array read from (or to be written to) an .npy file: raw little-endian elements.
struct NpyArray {
  NpyType type = NpyType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;

  std::int64_t elements() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
  /// Element i widened to float.
  float at(std::int64_t i) const {
    const std::byte* p = data.data() + i * static_cast<std::int64_t>(size_of(type));
    switch (type) {
      case NpyType::f32: {
        float f;
        std::memcpy(&f, p, 4);
        return f;
      }
      case NpyType::f64: {
        double f;
        std::memcpy(&f, p, 8);
        return static_cast<float>(f);
      }
      case NpyType::f16: {
        __half h;
        std::memcpy(&h, p, 2);
        return __half2float(h);
      }
      default: {
        __nv_bfloat16 h;
        std::memcpy(&h, p, 2);
        return __bfloat162float(h);
      }
    }
  }
  /// The elements converted to `t` (rounded to nearest), as raw 16-bit storage.
  std::vector<std::uint16_t> to_half_bits(DType t) const {
    std::vector<std::uint16_t> out(static_cast<std::size_t>(elements()));
    if (type == npy_type_of(t)) {
      std::memcpy(out.data(), data.data(), out.size() * 2);
      return out;
    }
    for (std::size_t i = 0; i < out.size(); ++i)
      store_float(out.data(), t, i, at(static_cast<std::int64_t>(i)));
    return out;
  }
};

namespace npy_detail {

[[noreturn]] inline void bad(const std::string& path, const std::string& what,
                             const std::string& expected) {
  throw Error(detail::cat("compact: .npy file '", path, "': ", what, ": expected ", expected));
}

inline void skip_space(std::string_view h, std::size_t& i) {
  while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n')) ++i;
}

/// The value text of key `name` in the header dict (from its first character).
inline std::size_t find_key(const std::string& path, std::string_view h, std::string_view name) {
  const std::string k1 = detail::cat("'", name, "'"), k2 = detail::cat("\"", name, "\"");
  std::size_t at = h.find(k1);
  std::size_t len = k1.size();
  if (at == std::string_view::npos) {
    at = h.find(k2);
    len = k2.size();
  }
  if (at == std::string_view::npos)
    bad(path, detail::cat("header has no '", name, "' key"), "a NumPy format header");
  std::size_t i = at + len;
  skip_space(h, i);
  if (i >= h.size() || h[i] != ':') bad(path, "malformed header dict", "'key': value pairs");
  ++i;
  skip_space(h, i);
  return i;
}

inline NpyType parse_descr(const std::string& path, std::string_view d) {
  if (d == "<f4" || d == "=f4") return NpyType::f32;
  if (d == "<f2" || d == "=f2") return NpyType::f16;
  if (d == "<f8" || d == "=f8") return NpyType::f64;
  if (d == "<V2" || d == "|V2" || d == "<u2" || d == "<i2" || d == "=u2" || d == "=i2") {
    return NpyType::bf16;
  }
  if (!d.empty() && d[0] == '>') {
    bad(path, detail::cat("descr '", d, "' is big-endian"),
        "little-endian data ('<f4', '<f2', '<V2')");
  }
  bad(path, detail::cat("descr '", d, "'"),
      "'<f4' (fp32), '<f2' (fp16), '<V2' / '<u2' / '<i2' (bf16 bit patterns) or '<f8'");
}

}  // namespace npy_detail

/// Reads a whole .npy file (format versions 1, 2 and 3). Throws compact::Error on a missing,
/// malformed, big-endian, Fortran-order or truncated file.
inline NpyArray read_npy(const std::string& path) {
  using npy_detail::bad;
  std::ifstream f(path, std::ios::binary);
  if (!f) bad(path, "cannot open", "a readable file");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    bad(path, "no .npy magic", "a file starting with \\x93NUMPY (written by numpy.save)");
  }
  const int major = static_cast<unsigned char>(magic[6]);
  if (major < 1 || major > 3) bad(path, detail::cat("format version ", major), "1, 2 or 3");
  std::uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) bad(path, "truncated header", "a complete header");
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) bad(path, "truncated header", "a complete header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
  }
  if (header_len > (1u << 20))
    bad(path, detail::cat("header length ", header_len), "a header below 1 MiB");
  std::string h(header_len, '\0');
  if (!f.read(h.data(), header_len)) bad(path, "truncated header", "a complete header");

  NpyArray a;
  {  // descr
    std::size_t i = npy_detail::find_key(path, h, "descr");
    if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) {
      bad(path, "descr is not a string (structured dtype)", "a plain dtype such as '<f4'");
    }
    const char quote = h[i];
    const std::size_t end = h.find(quote, i + 1);
    if (end == std::string::npos) bad(path, "unterminated descr", "a quoted dtype string");
    a.type = npy_detail::parse_descr(path, std::string_view(h).substr(i + 1, end - i - 1));
  }
  {  // fortran_order
    const std::size_t i = npy_detail::find_key(path, h, "fortran_order");
    if (h.compare(i, 4, "True") == 0)
      bad(path, "fortran_order is True", "C order (numpy.ascontiguousarray)");
    if (h.compare(i, 5, "False") != 0) bad(path, "fortran_order", "True or False");
  }
  {  // shape
    std::size_t i = npy_detail::find_key(path, h, "shape");
    if (i >= h.size() || h[i] != '(') bad(path, "shape", "a tuple");
    ++i;
    for (;;) {
      npy_detail::skip_space(h, i);
      if (i < h.size() && h[i] == ')') break;
      std::size_t j = i;
      while (j < h.size() && h[j] >= '0' && h[j] <= '9') ++j;
      if (j == i) bad(path, "shape", "a tuple of non-negative integers");
      a.shape.push_back(std::stoll(h.substr(i, j - i)));
      i = j;
      npy_detail::skip_space(h, i);
      if (i < h.size() && h[i] == ',') ++i;
    }
  }
  const std::int64_t n = a.elements();
  a.data.resize(static_cast<std::size_t>(n) * size_of(a.type));
  if (!f.read(reinterpret_cast<char*>(a.data.data()),
              static_cast<std::streamsize>(a.data.size()))) {
    bad(path, detail::cat("data ends early (", f.gcount(), " of ", a.data.size(), " bytes)"),
        "prod(shape) * itemsize bytes after the header");
  }
  return a;
}

/// Checks that an array is [tokens][heads][head_dim] with the given heads and head_dim (0: any);
/// compact::Error names the file (`what`) otherwise.
inline void require_qkv_shape(const NpyArray& a, std::string_view what, int heads, int head_dim) {
  const std::string dims = a.shape.empty() ? "()" : [&] {
    std::string s = "(";
    for (std::size_t i = 0; i < a.shape.size(); ++i) s += detail::cat(i ? ", " : "", a.shape[i]);
    return s + ")";
  }();
  require(a.shape.size() == 3, detail::cat(what, " shape"), dims,
          "[tokens, heads, head_dim] (3 dims)");
  require(heads == 0 || a.shape[1] == heads, detail::cat(what, " shape[1] (heads)"), a.shape[1],
          detail::cat(heads));
  require(head_dim == 0 || a.shape[2] == head_dim, detail::cat(what, " shape[2] (head_dim)"),
          a.shape[2], detail::cat(head_dim));
}

/// Streams an .npy file: the header first (format 1.0, padded to 64 bytes), then the elements in
/// any number of append() calls; close() checks that exactly prod(shape) elements came.
class NpyWriter {
 public:
  NpyWriter(const std::string& path, NpyType type, const std::vector<std::int64_t>& shape)
      : path_(path), type_(type), out_(path, std::ios::binary | std::ios::trunc) {
    if (!out_) npy_detail::bad(path, "cannot create", "a writable path");
    expected_ = 1;
    for (std::int64_t d : shape) expected_ *= d;
    const char* descr = type == NpyType::f32   ? "<f4"
                        : type == NpyType::f16 ? "<f2"
                        : type == NpyType::f64 ? "<f8"
                                               : "<V2";
    std::string dict = detail::cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (");
    for (std::size_t i = 0; i < shape.size(); ++i)
      dict += detail::cat(shape[i], shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    dict += "), }";
    std::size_t total = 10 + dict.size() + 1;
    dict.append((64 - total % 64) % 64, ' ');
    dict += '\n';
    const std::uint16_t len = static_cast<std::uint16_t>(dict.size());
    const char pre[10] = {'\x93',
                          'N',
                          'U',
                          'M',
                          'P',
                          'Y',
                          1,
                          0,
                          static_cast<char>(len & 0xff),
                          static_cast<char>(len >> 8)};
    out_.write(pre, 10);
    out_.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  }
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  /// Appends `count` elements stored in the file's element type.
  void append(const void* data, std::int64_t count) {
    written_ += count;
    require(written_ <= expected_, detail::cat(".npy file '", path_, "' elements"), written_,
            detail::cat("at most prod(shape) = ", expected_));
    out_.write(static_cast<const char*>(data),
               static_cast<std::streamsize>(count * size_of(type_)));
  }
  void close() {
    require(written_ == expected_, detail::cat(".npy file '", path_, "' elements written"),
            written_, detail::cat("prod(shape) = ", expected_));
    out_.close();
    if (!out_) npy_detail::bad(path_, "write failed", "a writable path with free space");
  }

 private:
  std::string path_;
  NpyType type_;
  std::ofstream out_;
  std::int64_t expected_ = 0, written_ = 0;
};

/// Writes a whole array.
inline void write_npy(const std::string& path, NpyType type, const std::vector<std::int64_t>& shape,
                      const void* data) {
  NpyWriter w(path, type, shape);
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  w.append(data, n);
  w.close();
}

}  // namespace compact::tools
