// .npy reading and writing: round trips of every element type, streaming, and the errors that
// bad files must raise.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../support/seed.hpp"
#include "common/npy.hpp"

using namespace compact;
using namespace compact::tools;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("compact_tools_test_" + name)).string();
}

/// Writes raw bytes: a hand-made .npy (header text as given, padded to `align`).
void write_raw(const std::string& path, int major, const std::string& dict,
               const std::vector<std::byte>& data, std::size_t drop_tail = 0) {
  std::string header = dict;
  const std::size_t pre = major == 1 ? 10 : 12;
  header.append((64 - (pre + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += static_cast<char>(major);
  bytes += '\0';
  const std::uint32_t len = static_cast<std::uint32_t>(header.size());
  bytes += static_cast<char>(len & 0xff);
  bytes += static_cast<char>((len >> 8) & 0xff);
  if (major != 1) {
    bytes += static_cast<char>((len >> 16) & 0xff);
    bytes += static_cast<char>(len >> 24);
  }
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(data.data()), data.size());
  bytes.resize(bytes.size() - drop_tail);
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string error_of(const std::string& path) {
  try {
    read_npy(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("npy: fp32, fp16 and bf16 arrays round-trip bit for bit with their shape") {
  auto rng = test::rng_for(0x4e50);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const std::vector<std::int64_t> shape = {7, 3, 16};
  const std::size_t n = 7 * 3 * 16;
  for (NpyType t : {NpyType::f32, NpyType::f16, NpyType::bf16}) {
    CAPTURE(to_string(t));
    std::vector<std::byte> data(n * size_of(t));
    for (std::size_t i = 0; i < n; ++i) {
      const float x = normal(rng);
      if (t == NpyType::f32) {
        std::memcpy(data.data() + 4 * i, &x, 4);
      } else {
        std::uint16_t bits;
        store_float(&bits, t == NpyType::bf16 ? DType::bf16 : DType::fp16, 0, x);
        std::memcpy(data.data() + 2 * i, &bits, 2);
      }
    }
    const std::string path = temp_path("roundtrip.npy");
    write_npy(path, t, shape, data.data());
    // The header is 64-byte aligned and names the documented descr.
    std::ifstream f(path, std::ios::binary);
    std::string head(128, '\0');
    f.read(head.data(), 128);
    const std::uint16_t hlen =
        static_cast<unsigned char>(head[8]) | (static_cast<unsigned char>(head[9]) << 8);
    CHECK((10 + hlen) % 64 == 0);
    const char* descr = t == NpyType::f32 ? "'<f4'" : t == NpyType::f16 ? "'<f2'" : "'<V2'";
    CHECK(head.find(descr) != std::string::npos);
    CHECK(head.find("'shape': (7, 3, 16)") != std::string::npos);
    const NpyArray a = read_npy(path);
    CHECK(a.type == t);
    CHECK(a.shape == shape);
    REQUIRE(a.data.size() == data.size());
    CHECK(std::memcmp(a.data.data(), data.data(), data.size()) == 0);
    CHECK_NOTHROW(require_qkv_shape(a, "q", 3, 16));
    std::filesystem::remove(path);
  }
}

TEST_CASE("npy: conversion to the attention dtype rounds fp32 to nearest and keeps 16-bit data") {
  const std::vector<float> x = {1.0f, -2.5f, 3.14159f, 1e-3f};
  const std::string path = temp_path("convert.npy");
  write_npy(path, NpyType::f32, {1, 1, 4}, x.data());
  const NpyArray a = read_npy(path);
  for (DType t : {DType::bf16, DType::fp16}) {
    const std::vector<std::uint16_t> bits = a.to_half_bits(t);
    for (std::size_t i = 0; i < x.size(); ++i) {
      std::uint16_t want;
      store_float(&want, t, 0, x[i]);
      CHECK(bits[i] == want);
      CHECK(a.at(static_cast<std::int64_t>(i)) == x[i]);
    }
  }
  std::filesystem::remove(path);
}

TEST_CASE("npy: the streaming writer checks the element count") {
  const std::string path = temp_path("stream.npy");
  {
    NpyWriter w(path, NpyType::f16, {4, 2, 8});
    std::vector<std::uint16_t> part(2 * 2 * 8, 0x3c00);  // 1.0 in fp16
    w.append(part.data(), static_cast<std::int64_t>(part.size()));
    w.append(part.data(), static_cast<std::int64_t>(part.size()));
    w.close();
  }
  const NpyArray a = read_npy(path);
  CHECK(a.elements() == 64);
  CHECK(a.at(63) == 1.0f);
  NpyWriter short_writer(path, NpyType::f16, {4, 2, 8});
  std::vector<std::uint16_t> part(8);
  short_writer.append(part.data(), 8);
  CHECK_THROWS_WITH_AS(short_writer.close(), doctest::Contains("prod(shape) = 64"), Error);
  NpyWriter long_writer(path, NpyType::f16, {1, 1, 4});
  CHECK_THROWS_WITH_AS(long_writer.append(part.data(), 8),
                       doctest::Contains("at most prod(shape) = 4"), Error);
  std::filesystem::remove(path);
}

TEST_CASE("npy: format 2.0 headers, '<u2' / '<i2' bf16 bit patterns and fp64 are read") {
  const std::string path = temp_path("v2.npy");
  std::vector<std::byte> data(2 * 3 * 2);
  const std::uint16_t bf16_one = 0x3f80, bf16_minus_two = 0xc000;
  for (int i = 0; i < 6; ++i)
    std::memcpy(data.data() + 2 * i, i % 2 ? &bf16_minus_two : &bf16_one, 2);
  for (const char* d : {"<u2", "<i2", "<V2", "|V2"}) {
    write_raw(path, 2,
              std::string("{'descr': '") + d + "', 'fortran_order': False, 'shape': (3, 1, 2), }",
              data);
    const NpyArray a = read_npy(path);
    CHECK(a.type == NpyType::bf16);
    CHECK(a.at(0) == 1.0f);
    CHECK(a.at(1) == -2.0f);
  }
  std::vector<std::byte> f64(8);
  const double v = 0.25;
  std::memcpy(f64.data(), &v, 8);
  write_raw(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1), }", f64);
  CHECK(read_npy(path).at(0) == 0.25f);
  std::filesystem::remove(path);
}

TEST_CASE("npy: bad files raise compact::Error naming the file and the expectation") {
  const std::string path = temp_path("bad.npy");
  const std::vector<std::byte> data(4 * 8);  // 8 floats
  CHECK(error_of(temp_path("missing.npy")).find("cannot open") != std::string::npos);

  std::ofstream(path, std::ios::binary) << "not a numpy file at all";
  CHECK(error_of(path).find("\\x93NUMPY") != std::string::npos);
  CHECK(error_of(path).find(path) != std::string::npos);

  write_raw(path, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2, 2), }", data);
  CHECK(error_of(path).find("big-endian") != std::string::npos);

  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2, 2), }", data);
  CHECK(error_of(path).find("C order") != std::string::npos);

  write_raw(path, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2, 2), }", data);
  CHECK(error_of(path).find("'<f4' (fp32)") != std::string::npos);

  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", data, 4);
  CHECK(error_of(path).find("data ends early (28 of 32 bytes)") != std::string::npos);
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", {}, 0);
  CHECK(error_of(path).find("data ends early (0 of 32 bytes)") != std::string::npos);

  write_raw(path, 1, "{'fortran_order': False, 'shape': (2, 2, 2), }", data);
  CHECK(error_of(path).find("'descr'") != std::string::npos);

  write_raw(path, 7, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", data);
  CHECK(error_of(path).find("format version 7") != std::string::npos);

  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", data);
  const NpyArray two_d = read_npy(path);
  CHECK_THROWS_WITH_AS(require_qkv_shape(two_d, "--q", 0, 0),
                       doctest::Contains("[tokens, heads, head_dim]"), Error);
  write_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", data);
  CHECK_THROWS_WITH_AS(require_qkv_shape(read_npy(path), "--k", 4, 2),
                       doctest::Contains("--k shape[1] (heads) = 2"), Error);
  std::filesystem::remove(path);
}
