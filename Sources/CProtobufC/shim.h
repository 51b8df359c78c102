// Exposes libprotobuf-c (Debian libprotobuf-c-dev) to Swift.
#include <protobuf-c/protobuf-c.h>
