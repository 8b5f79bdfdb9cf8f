/*
 * main.c — the agentdb binary: dispatches to a subcommand.
 */
#include <stdio.h>
#include <string.h>

#include "agentdb.h"
#include "cli.h"

static const struct {
  const char *name, *help;
  int (*fn)(int, char **);
} commands[] = {
    {"serve", "run the HTTP/JSON server", NULL},
    {"migrate", "apply the store's schema migrations", NULL},
    {"simulate", "run the seeded media workload and compare policies",
     cli_simulate},
    {"agents", "list, show, delete or reset agents", cli_agents},
    {"users", "show or erase a user's data", cli_users},
    {"backup", "copy a live SQLite store (online backup API)", cli_backup},
    {"restore", "copy a backup into the SQLite store (server stopped)",
     cli_restore},
    {"evaluate", "estimate candidate policies' rewards on a decision log",
     cli_evaluate},
};

static int (*command_fn(int i))(int, char **) {
  if (!strcmp(commands[i].name, "serve")) return cli_serve;
  if (!strcmp(commands[i].name, "migrate")) return cli_migrate;
  return commands[i].fn;
}

static void usage(FILE *f) {
  fprintf(f, "usage: agentdb <command> [options]   (agentdb <command> --help)\n"
             "\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (command_fn((int)i))
      fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
  fprintf(f, "  %-10s %s\n", "version", "print the version");
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
    printf("agentdb %s\n", ADB_VERSION);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (!strcmp(argv[1], commands[i].name) && command_fn((int)i))
      return command_fn((int)i)(argc - 1, argv + 1);
  fprintf(stderr, "agentdb: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
