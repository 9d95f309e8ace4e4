// Balancer is header-only for now; this unit keeps a place for policies that
// need state of their own (least connections, weights).
#include "holdfast/balancer.hpp"
