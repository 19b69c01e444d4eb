/// @file args.hpp
/// @brief A small command-line parser for the tools: `--name value`, `--name=value` and bare
/// `--flag`; typed getters that throw compact::Error naming the flag and what was expected, and
/// a final check that rejects unknown flags.
#pragma once

#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "compact/core/error.hpp"

namespace compact::tools {

class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      require(a.size() > 2 && a.compare(0, 2, "--") == 0, "argument", a, "--name [value] flags");
      a = a.substr(2);
      const std::size_t eq = a.find('=');
      if (eq != std::string::npos) {
        values_[a.substr(0, eq)] = a.substr(eq + 1);
      } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        values_[a] = argv[++i];
      } else {
        values_[a] = "";
      }
    }
  }

  bool has(const std::string& name) {
    used_.insert(name);
    return values_.count(name) != 0;
  }
  /// A bare switch (`--name`, or `--name=1/0/on/off/true/false`).
  bool flag(const std::string& name) {
    if (!has(name)) return false;
    const std::string& v = values_[name];
    if (v.empty() || v == "1" || v == "on" || v == "true") return true;
    if (v == "0" || v == "off" || v == "false") return false;
    fail("--" + name, v, "no value, or one of 1/0/on/off/true/false");
  }
  std::string str(const std::string& name, const std::string& fallback) {
    return has(name) ? values_[name] : fallback;
  }
  long long integer(const std::string& name, long long fallback) {
    if (!has(name)) return fallback;
    return parse_int("--" + name, values_[name]);
  }
  double real(const std::string& name, double fallback) {
    if (!has(name)) return fallback;
    return parse_real("--" + name, values_[name]);
  }
  /// Comma-separated integers (`--lags 1,8,64`).
  std::vector<long long> int_list(const std::string& name, const std::vector<long long>& fallback) {
    if (!has(name)) return fallback;
    std::vector<long long> out;
    std::stringstream ss(values_[name]);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(parse_int("--" + name, item));
    return out;
  }
  std::vector<std::string> str_list(const std::string& name,
                                    const std::vector<std::string>& fallback) {
    if (!has(name)) return fallback;
    std::vector<std::string> out;
    std::stringstream ss(values_[name]);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
  }
  /// Throws compact::Error for every flag nobody asked about (typos must not pass silently).
  void finish() const {
    for (const auto& [name, value] : values_) {
      require(used_.count(name) != 0, "--" + name, value.empty() ? "(set)" : value,
              "a known flag (see --help)");
    }
  }

  static long long parse_int(const std::string& what, const std::string& v) {
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    // Accept a K suffix (1024) for token counts: --tokens 128K.
    if (end != v.c_str() && (*end == 'K' || *end == 'k') && end[1] == '\0') return x * 1024;
    require(!v.empty() && end != nullptr && *end == '\0', what, v, "an integer");
    return x;
  }
  static double parse_real(const std::string& what, const std::string& v) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    require(!v.empty() && end != nullptr && *end == '\0', what, v, "a number");
    return x;
  }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> used_;
};

}  // namespace compact::tools
