"""The tools: one module per `facealign` subcommand, each owning its arguments (`add_arguments`), its run
(`run(args) -> exit status`) and its printing. `facealign.cli` lists them; the library never imports them."""
