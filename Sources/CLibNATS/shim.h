#ifndef MEETPERRY_CLIBNATS_SHIM_H
#define MEETPERRY_CLIBNATS_SHIM_H
#include <nats/nats.h>
#endif
