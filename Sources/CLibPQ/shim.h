#ifndef MEETPERRY_CLIBPQ_SHIM_H
#define MEETPERRY_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
