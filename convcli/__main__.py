from convcli.cli.main import main

main()
