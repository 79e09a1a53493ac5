"""The command groups of `govledger`, one module each. Each module has `add_parser(commands)`,
which `govledger.cli` calls to build the command table, and imports at its top only what
`--help` needs: a command's heavy imports (openai, pyarrow, faust, chdb, aiokafka,
cryptography) happen inside the function that runs it."""
