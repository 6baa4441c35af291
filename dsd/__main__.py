from dsd.cli import main

main()
