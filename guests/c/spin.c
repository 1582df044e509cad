/*
 * spin: loops forever and never returns; used to test that the host stops
 * runaway tasks (fuel, epoch deadlines, wall-clock timeouts). The counter is
 * volatile so that the optimizer must keep the loop (a side-effect-free
 * infinite loop may otherwise be assumed to terminate, C11 6.8.5p6).
 */
int main(void) {
    volatile unsigned long counter = 0;
    for (;;)
        counter++;
}
