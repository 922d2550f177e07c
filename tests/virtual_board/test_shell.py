"""The virtual board's shell alone: what it answers to the commands PyRPL types."""
from __future__ import annotations

import errno

from pymodaq_plugins_pyrpl.virtual_board import files
from pymodaq_plugins_pyrpl.virtual_board.files import BoardFiles
from pymodaq_plugins_pyrpl.virtual_board.shell import BoardShell, Result, encode
from tests.helpers.recording_control import RecordingControl


def _shell() -> tuple[BoardShell, RecordingControl, BoardFiles]:
    control, board_files = RecordingControl(), BoardFiles()
    return BoardShell(board_files, control), control, board_files


def test_pyrpl_start_up_dialogue() -> None:
    shell, control, _ = _shell()
    assert shell.run("cat /root/.version").output == "2.00-35\n"
    assert "pyrpl" in shell.run("cat /tmp/loaded_fpga.inf").output
    assert "No such file or directory" in shell.run("ls //opt//pyrpl//fpga.bin").output
    assert shell.run("/opt/redpitaya/bin/led_control -y=Off -e=Off -r=Off").output == ""
    killall = shell.run("killall monitor_server")
    assert (killall.output, killall.status) == ("monitor_server: no process found\n", 1)
    started = shell.run("//opt//pyrpl///monitor_server 2222")
    assert (started.output, started.status) == ("", 0)
    assert shell.in_foreground()
    assert control.calls == [("killall",), ("start", 2222)]
    shell.interrupt()  # Ctrl-C ends the foreground monitor server, once
    shell.interrupt()
    assert control.calls[2:] == [("stop", 2222)] and not shell.in_foreground()
    assert "sh" not in shell.prompt()


def test_killall_ends_the_foreground_server_too() -> None:
    shell, control, _ = _shell()
    shell.run("/opt/pyrpl/monitor_server 2222")
    assert shell.run("killall monitor_server").status == 0
    shell.interrupt()
    assert control.calls == [("start", 2222), ("killall",)]


def test_monitor_server_port_as_c_atoi_and_its_errors() -> None:
    shell, control, _ = _shell()
    shell.run("/opt/pyrpl/monitor_server 70000")
    shell.run("/opt/pyrpl/monitor_server abc")
    assert control.calls == [("start", 70000 % 65536), ("start", 0)]
    assert shell.run("/opt/pyrpl/monitor_server").output == "ERROR, no port provided\n"
    control.refuse = OSError(errno.EADDRINUSE, "Address already in use")
    refused = shell.run("/opt/pyrpl/monitor_server 2222")
    assert (refused.output, refused.status) == ("ERROR on binding: Address already in use\n", 1)


def test_a_missing_binary_answers_like_bash_so_pyrpl_installs_its_own() -> None:
    shell, control, _ = _shell()
    result = shell.run("//opt//pyrpl///other_server 2222")
    assert "sh" in result.output and result.status == 127 and control.calls == []
    assert shell.run("frobnicate").output == "-bash: frobnicate: command not found\n"


def test_overlay_loads_the_uploaded_bitfile_and_resets_the_fpga() -> None:
    shell, control, board_files = _shell()
    update = "/opt/redpitaya/sbin/overlay.sh pyrpl //opt//pyrpl//fpga.bin //opt//pyrpl//fpga.dtbo"
    assert shell.run(update).status == 1  # nothing uploaded yet
    assert "failed" in shell.run("cat /tmp/update_fpga.txt").output and control.calls == []
    assert shell.run("mkdir -p //opt//pyrpl//").status == 0
    board_files.write("/opt/pyrpl/fpga.bin", b"bitfile")
    board_files.write("/opt/pyrpl/fpga.dtbo", b"overlay")
    assert shell.run(update).status == 0 and control.calls == [("load",)]
    report = shell.run("cat /tmp/update_fpga.txt").output.lower()
    assert "failed" not in report and "cannot stat" not in report
    assert shell.run("cat /tmp/loaded_fpga.inf").output == "pyrpl"
    assert shell.run("ls //opt//pyrpl//fpga.bin").output == "//opt//pyrpl//fpga.bin\n"
    age = 'echo $(($(date +%s) - $(date +%s -r "//opt//pyrpl//fpga.bin")))'
    assert 0 <= int(shell.run(age).output) <= 1
    shell.run("rm -f //opt//pyrpl//fpga.dtbo")
    shell.run("rm -f //opt//pyrpl//fpga.bin")
    assert not board_files.is_file("/opt/pyrpl/fpga.bin")


def test_folders_and_relative_paths() -> None:
    shell, control, _ = _shell()
    assert shell.run("cd /opt/pyrpl").status == 0
    assert shell.prompt() == "root@rp-virtual:/opt/pyrpl# "
    shell.run("./monitor_server 2300")
    assert control.calls == [("start", 2300)]
    assert shell.run("cd /nowhere").status == 1
    assert files.normalize("..//x/./y", "/opt/pyrpl") == "/opt/x/y"


def test_output_redirection_writes_the_file_not_the_terminal() -> None:
    """PyRPL's flashing on an OS it does not recognise, ``cat BITFILE > //dev//xdevcfg``, prints
    nothing (it printed the bitfile, which PyRPL cannot decode); ``cat`` keeps a file's bytes."""
    shell, _, board_files = _shell()
    bitfile = bytes(range(256)) * 4
    board_files.make_folders("/opt/pyrpl")
    board_files.write("/opt/pyrpl/fpga.bin", bitfile)
    assert shell.run("cat //opt//pyrpl//fpga.bin > //dev//xdevcfg") == Result("")
    assert board_files.read("/dev/xdevcfg") == bitfile
    assert encode(shell.run("cat /opt/pyrpl/fpga.bin").output) == bitfile
    assert shell.run("echo a >/tmp/x") == shell.run("echo b >> /tmp/x") == Result("")
    assert board_files.read("/tmp/x") == b"a\nb\n"
    failed = shell.run("cat /nowhere > /tmp/x")  # errors stay on the terminal; ">" emptied it
    assert (failed.output, failed.status) == ("cat: /nowhere: No such file or directory\n", 1)
    assert board_files.read("/tmp/x") == b""
    assert shell.run("echo 1 > /sys/class/gpio/export").status == 1
    assert shell.run("echo 1 >").status == 2


def test_proc_files_answer_from_the_board_and_every_line_is_logged_by_session() -> None:
    control, board_files = RecordingControl(), BoardFiles()
    shell = BoardShell(board_files, control, session=7)
    control.tcp = "  sl  local_address rem_address   st\n"
    assert shell.run("cat /proc/sys/kernel/random/boot_id") == Result(control.boot + "\n")
    control.boot = "00000000-0000-4000-8000-000000000002"  # read when read: a reboot shows
    assert shell.run("cat /proc/sys/kernel/random/boot_id").output == control.boot + "\n"
    assert shell.run("cat //proc//net//tcp") == Result(control.tcp)
    shell.run("  killall monitor_server ")
    shell.run("")
    assert control.lines == [(7, "cat /proc/sys/kernel/random/boot_id"),
                             (7, "cat /proc/sys/kernel/random/boot_id"),
                             (7, "cat //proc//net//tcp"), (7, "killall monitor_server")]


def test_commands_separated_by_semicolons_run_in_turn_logged_as_one_line() -> None:
    shell, control, _ = _shell()
    control.tcp = "table\n"
    line = "cat /proc/sys/kernel/random/boot_id; cat /proc/net/tcp"
    assert shell.run(line) == Result(control.boot + "\ntable\n")
    assert shell.run("cat /nowhere; echo 'a;b';") == Result(
        "cat: /nowhere: No such file or directory\na;b\n", 0)
    assert shell.run("echo a; cat /nowhere").status == 1
    assert shell.run(" ; ") == Result("")
    assert [entry for _, entry in control.lines][:2] == [line, "cat /nowhere; echo 'a;b';"]


def test_a_detached_monitor_server_neither_holds_the_terminal_nor_ends_with_ctrl_c() -> None:
    """``nohup SERVER PORT > LOG 2>&1 < /dev/null &``, the board link's start without killall:
    status 0, nothing printed, the server not in the foreground (Ctrl-C leaves it running)."""
    shell, control, board_files = _shell()
    line = "nohup //opt//pyrpl///monitor_server 2222 > /tmp/monitor_server.log 2>&1 < /dev/null &"
    assert shell.run(line) == Result("")
    assert control.calls == [("start", 2222)] and not shell.in_foreground()
    shell.interrupt()
    assert control.calls == [("start", 2222)]
    assert board_files.read("/tmp/monitor_server.log") == b""
    control.refuse = OSError(errno.EADDRINUSE, "Address already in use")
    assert shell.run(line) == Result("")  # a background job's status is 0: its errors are logged
    assert board_files.read("/tmp/monitor_server.log") == \
        b"ERROR on binding: Address already in use\n"
    assert shell.run("nohup //opt//pyrpl///monitor_server 2222") == Result(
        "ERROR on binding: Address already in use\n", 1)  # in the foreground: its status


def test_nohup_runs_programs_and_says_when_it_cannot() -> None:
    shell, control, _ = _shell()
    assert shell.run("nohup echo hi") == Result("hi\n")
    missing = shell.run("nohup /opt/pyrpl/other_server 2222")
    assert missing == Result(
        "nohup: failed to run command '/opt/pyrpl/other_server': No such file or directory\n", 127)
    assert shell.run("nohup /root/.version").status == 126
    assert shell.run("nohup frobnicate").status == 127
    assert shell.run("nohup").status == 125
    assert shell.run("nohup /opt/pyrpl/monitor_server 2222") == Result("")
    assert shell.in_foreground()  # no "&": it holds the terminal
    assert control.calls == [("start", 2222)]


def test_redirections_of_errors_and_input_and_dev_null() -> None:
    shell, _, board_files = _shell()
    assert shell.run("cat /nowhere > /tmp/log 2>&1") == Result("", 1)
    assert board_files.read("/tmp/log") == b"cat: /nowhere: No such file or directory\n"
    assert shell.run("cat /nowhere 2>&1 > /tmp/log") == Result(  # 2>&1 first: the terminal
        "cat: /nowhere: No such file or directory\n", 1)
    assert board_files.read("/tmp/log") == b""
    assert shell.run("echo a > /dev/null") == Result("")
    assert shell.run("cat /dev/null") == Result("") and board_files.read("/dev/null") is None
    assert shell.run("cat /nowhere > /dev/null") == Result(
        "cat: /nowhere: No such file or directory\n", 1)
    assert shell.run("echo a < /dev/null") == Result("a\n")
    assert shell.run("echo a <") == Result(
        "-bash: syntax error near unexpected token `newline'\n", 2)
    assert shell.run("echo a < /tmp/none") == Result(
        "-bash: /tmp/none: No such file or directory\n", 1)


def test_an_ampersand_ends_a_background_job_but_not_a_redirection_or_and_list() -> None:
    shell, control, _ = _shell()
    assert shell.run("echo a & echo b") == Result("a\nb\n")
    assert shell.run("cat /nowhere &") == Result("cat: /nowhere: No such file or directory\n", 0)
    assert shell.run("echo 'a & b'") == Result("a & b\n")
    assert shell.run("echo a && echo b") == Result("a && echo b\n")  # no "&&": words, as before
    assert control.lines[-1] == (0, "echo a && echo b")
