"""``manage.py compliance_report <trades|orders|statement|surveillance> --from --to
[--market SYMBOL] [--account WALLET|ID] [-o FILE]``: a compliance report as CSV, to a
file or standard output, from the same generators as the admin's downloads. The export
is recorded in the audit trail as the platform's (actor ``system``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.reports import REPORTS, csv_lines
from compliance.services.audit import SYSTEM
from compliance.services.reports import report_export_start


class Command(BaseCommand):
    help = "Write a compliance report (trades, orders, statement, surveillance) as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("report", choices=sorted(REPORTS))
        parser.add_argument(
            "--from", dest="start", required=True, help="UTC, inclusive: 2026-11-01[T09:30]"
        )
        parser.add_argument("--to", dest="end", required=True, help="UTC, exclusive")
        parser.add_argument("--market", help="Market symbol (trades: optional; orders: required)")
        parser.add_argument("--account", help="Wallet address or account id (statement)")
        parser.add_argument("-o", "--output", help="File to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        spec = REPORTS[options["report"]]
        given = {name: options.get(name) for name in ("start", "end", "market", "account")}
        form = spec.form(data={k: v for k, v in given.items() if v is not None})
        unused = [f"--{k}" for k in ("market", "account") if given[k] and k not in form.fields]
        if unused:
            raise CommandError(f"the {spec.name} report takes no {' or '.join(unused)}")
        if not form.is_valid():
            problems = "; ".join(
                f"{'--' + name if name != '__all__' else 'period'}: {' '.join(errors)}"
                for name, errors in form.errors.items()
            )
            raise CommandError(problems.replace("--start", "--from").replace("--end", "--to"))
        data = form.cleaned_data
        report_export_start(
            actor=SYSTEM,
            report=spec.name,
            parameters=form.parameters(),
            market=data.get("market"),
            account=data.get("account"),
        )
        lines = csv_lines(spec.rows(data))
        if options["output"]:
            with open(options["output"], "w", newline="", encoding="utf-8") as out:
                count = _write(lines, out.write)
            self.stderr.write(f"{spec.title}: {count - 1} rows written to {options['output']}")
        else:
            _write(lines, partial(self.stdout.write, ending=""))


def _write(lines: Iterable[str], write: Callable[[str], Any]) -> int:
    count = 0
    for line in lines:
        write(line)
        count += 1
    return count
