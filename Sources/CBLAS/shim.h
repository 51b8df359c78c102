// Exposes OpenBLAS's CBLAS interface (Debian libopenblas-dev) to Swift.
// pkg-config `openblas` puts the OpenBLAS variant's include directory first.
#include <cblas.h>
