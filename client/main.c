/* The agentz command: everything lives in the azclient library (client/cli.c) so integration
 * tests can run the same code in-process. */
#include <signal.h>
#include <stdio.h>

#include "cli.h"

int main(int argc, char **argv)
{
    /* A closed pipe (agentz ... | head) should end output quietly, not kill us mid-write. */
    signal(SIGPIPE, SIG_IGN);
    return az_cli_main(argc, argv, stdout, stderr);
}
