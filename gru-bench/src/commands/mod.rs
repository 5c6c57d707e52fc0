//! One module per subcommand of the `gru` command.

pub mod run;
