//! One module per subcommand of the `gru` command.

pub mod accuracy;
pub mod bench;
pub mod run;
