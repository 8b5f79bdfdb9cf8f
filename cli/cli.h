/*
 * cli.h — subcommands of the agentdb binary. Each takes the arguments after
 * its name (argv[0] is the subcommand) and returns the process exit code.
 */
#ifndef ADB_CLI_H
#define ADB_CLI_H

int cli_simulate(int argc, char **argv);
/* `simulate --workload embed` (cli/simulate_embed.c). */
int cli_simulate_embed(int argc, char **argv);
int cli_agents(int argc, char **argv); /* cli/admin.c */
int cli_users(int argc, char **argv);
/* cli/backup.c: online backup and restore of the SQLite store. */
int cli_backup(int argc, char **argv);
int cli_restore(int argc, char **argv);
/* cli/evaluate.c: offline evaluation of candidate policies on a log. */
int cli_evaluate(int argc, char **argv);
/* Defined by cli/serve.c and cli/migrate.c when those are built. */
int cli_serve(int argc, char **argv) __attribute__((weak));
int cli_migrate(int argc, char **argv) __attribute__((weak));

#endif
