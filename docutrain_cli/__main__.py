from docutrain_cli.cli import main

main()
