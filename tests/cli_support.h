// What the CLI tests share: running the real binary and checking its one-line errors.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace ddpm::test {

struct Result {
  int code;
  std::string output;
};

/// A shell command's exit code (128 + signal when killed) and standard output.
inline Result shell(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

/// The CLI on one thread, standard error folded into the output.
inline Result run(const std::string& args) { return shell(std::string(DDPM_CLI) + " --threads 1 " + args + " 2>&1"); }

/// A scratch folder of this test process.
inline std::string dir() {
  static const std::string d = [] {
    auto p = std::filesystem::temp_directory_path() / ("ddpm_test_cli_" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p.string();
  }();
  return d;
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

/// A user mistake: non-zero exit, exactly one line, naming the problem.
inline void expect_one_line_error(const std::string& args, const std::string& needle) {
  auto r = run(args);
  EXPECT_NE(r.code, 0) << args;
  EXPECT_EQ(count_lines(r.output), 1) << args << "\n" << r.output;
  EXPECT_EQ(r.output.rfind("ddpm: error: ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.output;
  EXPECT_EQ(r.output.find("terminate"), std::string::npos) << r.output;
}

}  // namespace ddpm::test
