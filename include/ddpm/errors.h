// Typed exceptions of the ddpm library. The library never prints or exits: it throws one of these with a
// message a user can act on, and the CLI renders it as one line.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace ddpm {

/// Base of every error the library throws on purpose. `field` names the setting at fault when there is one
/// (a member of an options struct: "timesteps", "eta", "schedule"), so that a front end can name its own
/// spelling of it (the CLI's --timesteps, a JSON request's field).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::string field = {})
      : std::runtime_error(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

/// A value outside its domain: an unknown name, T < 1, eta < 0, a tensor of the wrong shape.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be opened, read or written.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A file whose contents are not what its format requires (truncated, wrong header, wrong dtype).
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A checkpoint or model whose configuration contradicts what was asked for.
class ConfigMismatch : public Error {
 public:
  using Error::Error;
};

/// Work stopped because its caller asked (a cancelled job, a stopping server): not a failure.
class Cancelled : public Error {
 public:
  using Error::Error;
};

}  // namespace ddpm
