#include "bf_test.h"
int main(void) { return bf_test_report(); }
