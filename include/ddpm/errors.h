// Typed exceptions of the ddpm library. The library never prints or exits: it throws one of these with a
// message a user can act on, and the CLI renders it as one line.
#pragma once

#include <stdexcept>
#include <string>

namespace ddpm {

/// Base of every error the library throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
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

}  // namespace ddpm
