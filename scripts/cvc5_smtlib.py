"""An interactive SMT-LIB front-end over cvc5's Python bindings.

PyPI's `cvc5` 1.3.1 wheel ships the solver library and its SMT-LIB parser but no executable,
and Debian's `cvc5` package is 1.0.3, older than the 1.3.1 Cedar's symbolic compiler is
verified against. This script behaves as `cvc5 --lang smt` does when driven through pipes:
it reads commands from stdin as they complete, runs each through cvc5's own parser and
command objects, and writes cvc5's own responses to stdout, flushed after every command.

Command-line options `--NAME=VALUE` (e.g. `--tlimit-per=60000`) are set on the solver as
`(set-option :NAME VALUE)` would; `--lang smt` / `--lang=smt2` are accepted and anything else
for `--lang` is refused.
"""

import sys

import cvc5


def solver_options(argv):
    options, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--lang":
            lang = args.pop(0) if args else ""
            check_language(lang)
        elif arg.startswith("--lang="):
            check_language(arg.split("=", 1)[1])
        elif arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            # cvc5's own `--tlimit` bounds the whole process; one long-lived solver answers
            # many queries here, so each query gets the bound instead.
            options.append(("tlimit-per" if name == "tlimit" else name, value))
        elif arg.startswith("--"):
            options.append((arg[2:], "true"))
        else:
            sys.exit(f"cvc5_smtlib: input files are not supported (got `{arg}`); pipe commands to stdin")
    return options


def check_language(lang):
    if lang not in ("smt", "smt2", "smtlib", "smt2.6", "smtlib2.6"):
        sys.exit(f"cvc5_smtlib: only SMT-LIB input is supported (got `--lang {lang}`)")


class CommandReader:
    """Splits a character stream into whole top-level S-expressions, honouring SMT-LIB's
    string literals, quoted symbols and comments, so a command is handed to the parser only
    once its closing parenthesis has arrived."""

    def __init__(self):
        self.pending = []
        self.depth = 0
        self.state = "code"  # code | string | quoted | comment

    def feed(self, line):
        complete = []
        for ch in line:
            self.pending.append(ch)
            if self.state == "string":
                if ch == '"':
                    self.state = "code"  # an escaped "" re-enters string state at once
            elif self.state == "quoted":
                if ch == "|":
                    self.state = "code"
            elif self.state == "comment":
                if ch == "\n":
                    self.state = "code"
            elif ch == '"':
                self.state = "string"
            elif ch == "|":
                self.state = "quoted"
            elif ch == ";":
                self.state = "comment"
            elif ch == "(":
                self.depth += 1
            elif ch == ")":
                self.depth -= 1
                if self.depth == 0:
                    complete.append("".join(self.pending))
                    self.pending = []
        return complete


def main():
    tm = cvc5.TermManager()
    solver = cvc5.Solver(tm)
    for name, value in solver_options(sys.argv[1:]):
        solver.setOption(name, value)
    symbols = cvc5.SymbolManager(tm)
    parser = cvc5.InputParser(solver, symbols)
    parser.setIncrementalStringInput(cvc5.InputLanguage.SMT_LIB_2_6, "stdin")
    reader = CommandReader()
    for line in sys.stdin:
        for text in reader.feed(line):
            if not run(parser, solver, symbols, text):
                return


def run(parser, solver, symbols, text):
    """Runs one command; false when the session is over (exit, or a parse error, after which
    cvc5 itself stops reading)."""
    parser.appendIncrementalStringInput(text)
    try:
        command = parser.nextCommand()
    except RuntimeError as error:
        respond(f'(error "Parse Error: {escape(error)}")')
        return False
    if command.isNull():
        return True
    if command.getCommandName() == "exit":
        return False
    try:
        output = command.invoke(solver, symbols)
    except RuntimeError as error:
        output = f'(error "{escape(error)}")\n'
    if output:
        respond(output.rstrip("\n"))
    return True


def escape(error):
    return str(error).replace('"', '""').replace("\n", " ")


def respond(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
