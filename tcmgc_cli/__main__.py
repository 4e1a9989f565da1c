from tcmgc_cli.cli import main

main()
