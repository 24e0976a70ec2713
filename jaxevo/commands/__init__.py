"""One module per `jaxevo` subcommand: add_arguments(parser), run(args) -> exit code."""
