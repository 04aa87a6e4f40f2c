// The CBLAS interface of OpenBLAS (Debian package libopenblas-dev).
#include <cblas.h>
